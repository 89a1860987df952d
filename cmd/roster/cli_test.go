package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestCommandLineContract checks the documented command-line contract: run
// --json, exit statuses, users/departments output, the runs ledger views.
func TestCommandLineContract(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	c.must("tenant", "add", "acme", "--seats", "100")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644) //nolint:errcheck
		return p
	}
	depts := write("departments.csv", "name,parent\nCompany,\nEngineering,Company\n")
	users := write("users.csv", "employee_id,email,first_name,last_name,manager_email,department_name,deactivation_date\n"+
		"'007,ada@example.com,Ada,Lovelace,,Engineering,\n8,bob@example.com,Bob,Smith,ada@example.com,Engineering,2020-01-01\n9,not-an-email,Cy,Young,,,\n")

	code, out, _ := c.roster(ctx, "run", "--tenant", "acme", "--file", users, "--file", depts, "--json")
	if code != 0 {
		t.Fatalf("run exit %d (row errors must not fail the run): %s", code, out)
	}
	var res runJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "partial" || len(res.Files) != 2 || res.Files[0].Kind != "departments" {
		t.Fatalf("run: %+v", res)
	}
	u := res.Files[1]
	if u.Created != 2 || u.Errors != 1 || u.Issues[0].Code != "email_invalid" || u.Issues[0].Row != 4 || u.Issues[0].Column != "email" {
		t.Fatalf("users file: %+v", u)
	}

	// users lists deactivated users too, with active true/false.
	recs, err := csv.NewReader(strings.NewReader(c.must("users", "--tenant", "acme"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"employee_id", "email", "first_name", "last_name", "manager_email", "department_name", "title", "location", "start_date", "deactivation_date", "active"},
		{"007", "ada@example.com", "Ada", "Lovelace", "", "Engineering", "", "", "", "", "true"},
		{"8", "bob@example.com", "Bob", "Smith", "ada@example.com", "Engineering", "", "", "", "2020-01-01", "false"},
	}
	if len(recs) != len(want) {
		t.Fatalf("users:\n%v", recs)
	}
	for i := range want {
		if strings.Join(recs[i], ",") != strings.Join(want[i], ",") {
			t.Fatalf("users row %d: %v, want %v", i, recs[i], want[i])
		}
	}
	if got := c.must("departments", "--tenant", "acme"); got != "name,parent,active\nCompany,,true\nEngineering,Company,true\n" {
		t.Fatalf("departments:\n%s", got)
	}

	// A rejected file: exit 1, and --json still prints its object.
	bad := write("bad.csv", "foo,bar\n1,2\n")
	code, out, _ = c.roster(ctx, "run", "--tenant", "acme", "--file", bad, "--json")
	if code != 1 {
		t.Fatalf("rejected file: exit %d", code)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Files[0].Status != "rejected" || res.Files[0].Issues[0].Code != "unknown_file_kind" {
		t.Fatalf("rejected file --json: %v %s", err, out)
	}
	// Duplicates only: exit 0.
	if code, _, _ := c.roster(ctx, "run", "--tenant", "acme", "--file", depts); code != 0 {
		t.Fatalf("a duplicate-only run exits %d", code)
	}
	// Usage and configuration errors: exit 2, one line on stderr.
	for _, args := range [][]string{{"run"}, {"run", "--tenant", "nope", "--file", users}, {"users"}, {"frobnicate"}, {"runs", "show", "x"}} {
		code, _, errs := c.roster(ctx, args...)
		if code != 2 || strings.Count(strings.TrimSpace(errs), "\n") > 0 && !strings.Contains(errs, "usage") {
			t.Errorf("roster %v: exit %d, stderr %q", args, code, errs)
		}
	}

	var runs []map[string]any
	if err := json.Unmarshal([]byte(c.must("runs", "list", "--json")), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("%d runs listed, want 3", len(runs))
	}
	for _, k := range []string{"run_id", "tenant", "trigger", "logical_date", "status", "started_at", "finished_at"} {
		if _, ok := runs[0][k]; !ok {
			t.Errorf("runs list --json lacks %q", k)
		}
	}
	var show struct {
		Files  []map[string]any `json:"files"`
		Stages []struct {
			Stage      string  `json:"stage"`
			RowsIn     int64   `json:"rows_in"`
			RowsOut    int64   `json:"rows_out"`
			DurationMS float64 `json:"duration_ms"`
		} `json:"stages"`
		Issues []map[string]any `json:"issues"`
	}
	first := int(runs[2]["run_id"].(float64))
	if err := json.Unmarshal([]byte(c.must("runs", "show", strings.TrimSpace(jsonNumber(first)), "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if len(show.Files) != 2 || len(show.Issues) != 1 {
		t.Fatalf("runs show: %d files, %d issues", len(show.Files), len(show.Issues))
	}
	// A file's counts keep their flat keys.
	counted := false
	for _, f := range show.Files {
		if f["rows"] == 3.0 && f["created"] != nil && f["unchanged"] != nil {
			counted = true
		}
	}
	if !counted {
		t.Fatalf("runs show lacks the users file's counts (rows 3, created, unchanged): %+v", show.Files)
	}
	parsed := false
	for _, s := range show.Stages {
		if s.Stage == "parse" && s.RowsOut == 3 && s.DurationMS >= 0 {
			parsed = true
		}
	}
	if !parsed {
		t.Fatalf("runs show lacks the users file's parse stage with 3 rows: %+v", show.Stages)
	}
}

func jsonNumber(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestBackfillDryRunAndExportOnly: --dry-run lists every date of the range
// with its decision and reason and exits 0; --export-only rewrites each
// date's partitions without running files.
func TestBackfillDryRunAndExportOnly(t *testing.T) {
	c := newCLI(t)
	c.must("tenant", "add", "acme")
	users := filepath.Join(t.TempDir(), "users.csv")
	os.WriteFile(users, []byte("employee_id,email,first_name,last_name\n1,ada@example.com,Ada,Lovelace\n"), 0o644) //nolint:errcheck
	c.must("run", "--tenant", "acme", "--date", "2026-05-02", "--file", users)
	var plan []struct{ Date, Decision, Reason string }
	if err := json.Unmarshal([]byte(c.must("backfill", "--tenant", "acme", "--from", "2026-05-01", "--to", "2026-05-03", "--dry-run", "--json")), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan) != 3 || plan[0].Decision != "skip" || plan[1].Decision != "skip" || !strings.Contains(plan[1].Reason, "already done") || !strings.Contains(plan[0].Reason, "no files") {
		t.Fatalf("dry run plan %+v", plan)
	}
	if err := json.Unmarshal([]byte(c.must("backfill", "--tenant", "acme", "--from", "2026-05-02", "--reprocess", "all", "--dry-run", "--json")), &plan); err != nil || plan[0].Decision != "run" {
		t.Fatalf("--reprocess all: %v %+v", err, plan)
	}
	out := t.TempDir()
	c.must("backfill", "--tenant", "acme", "--from", "2026-05-01", "--to", "2026-05-03", "--export-only", "--out", out)
	for _, d := range []string{"2026-05-01", "2026-05-02", "2026-05-03"} {
		if _, err := os.Stat(filepath.Join(out, "employee_snapshot", "tenant=acme", "dt="+d, "part-0.parquet")); err != nil {
			t.Errorf("export-only %s: %v", d, err)
		}
	}
}

// TestUsageListsGlobalFlagsWithoutTheDatabasePassword: `roster help`
// prints every global flag with its default, and the database URL from
// the environment, which may hold a password, is not one of them.
func TestUsageListsGlobalFlagsWithoutTheDatabasePassword(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://roster:s3cret-in-url@db.internal/roster")
	var out, errs bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errs); code != exitOK {
		t.Fatalf("help exit %d: %s", code, errs.String())
	}
	for _, flag := range []string{"-db", "-data-dir", "-log-level", "-memory-limit-mib", "-cpu-profile"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("help does not list %s:\n%s", flag, out.String())
		}
	}
	if strings.Contains(out.String()+errs.String(), "s3cret-in-url") {
		t.Fatalf("help printed the database password:\n%s", out.String())
	}
}

// TestPollWithMoreWorkersThanConnections: every worker holds a tenant lock
// on its own connection for the whole run; with more workers than the
// pool had connections, the runs waited for each other forever.
func TestPollWithMoreWorkersThanConnections(t *testing.T) {
	c := newCLI(t)
	const tenants = 24
	var users strings.Builder
	fixtures.WriteUsers(&users, fixtures.UserOptions{Rows: 20, Seed: 3}) //nolint:errcheck
	for i := 0; i < tenants; i++ {
		id := fmt.Sprintf("t%02d", i)
		c.must("tenant", "add", id)
		in := filepath.Join(c.dataDir, "sftp", id, "incoming")
		if err := os.MkdirAll(in, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(in, "users.csv"), []byte(users.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code, out, errs := c.roster(ctx, "poll", "--workers", "20"); code != 0 || ctx.Err() != nil {
		t.Fatalf("poll --workers 20: exit %d (%v)\n%s%s", code, ctx.Err(), out, errs)
	}
	var applied int
	if err := c.db.Get(&applied, `SELECT count(*) FROM run_files WHERE status = 'applied'`); err != nil || applied != tenants {
		t.Fatalf("%d files applied (%v), want %d", applied, err, tenants)
	}
}

// TestOpenSetsUpTheSecondConnectionBeside: a command's second database
// connection (its queries, beside the lock it holds on the first) is set
// up while the first is, not after it.
func TestOpenSetsUpTheSecondConnectionBeside(t *testing.T) {
	_, url := pgtest.New(t)
	a := &app{dbURL: url}
	db, err := a.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(5 * time.Second)
	for db.Stats().OpenConnections < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection(s) open after open(), want a second set up beside the first", db.Stats().OpenConnections)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
