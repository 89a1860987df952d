package stages_test

// Fault injection (issue #8): PostgreSQL restarted in the middle of a
// file's apply transaction. It runs on a PostgreSQL cluster of its own
// (scripts/pg.sh with ROSTER_PG_DIR), never on the shared test cluster that
// other packages use in parallel.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

// dedicatedCluster starts a PostgreSQL cluster for this test alone and
// returns its URL and a function that restarts it (pg_ctl restart -m fast,
// waiting until it accepts connections again).
func dedicatedCluster(t *testing.T) (url string, restart func() error) {
	t.Helper()
	pgctl, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(pgctl) == 0 {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			pgctl = []string{p}
		}
	}
	if len(pgctl) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the PostgreSQL server binaries are not installed (pg_ctl)")
		}
		t.Skip("the PostgreSQL server binaries are not installed (pg_ctl)")
	}
	// Under /tmp with mode 0755: as root, the cluster runs as the postgres
	// OS user, which must reach its directory (t.TempDir's parents are 0700).
	dir, err := os.MkdirTemp("", "roster-pgfault-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) //nolint:errcheck
	script, err := filepath.Abs("../scripts/pg.sh")
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DATABASE_URL=") { // pg.sh would just print it
			env = append(env, e)
		}
	}
	env = append(env, "ROSTER_PG_DIR="+dir)
	pgsh := func(arg string) (string, error) {
		cmd := exec.Command("bash", script, arg)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("pg.sh %s: %v: %s", arg, err, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	t.Cleanup(func() {
		if _, err := pgsh("stop"); err != nil {
			t.Errorf("stop the dedicated cluster: %v", err)
		}
		os.RemoveAll(dir) //nolint:errcheck
	})
	if url, err = pgsh("start"); err != nil {
		t.Fatal(err)
	}
	restart = func() error {
		args := []string{pgctl[0], "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "server.log"), "-m", "fast", "-w", "-t", "60", "restart"}
		if os.Getuid() == 0 {
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctl restart: %v: %s", err, out)
		}
		return nil
	}
	return url, restart
}

// dirState is what a file's apply changes, by content: users, departments,
// history and the files recorded as applied.
func dirState(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var parts []string
	for _, q := range []string{
		`SELECT coalesce(string_agg(concat_ws(',', employee_id, email, first_name, last_name, title, location, department_id, manager_id, active), '|' ORDER BY email), '') FROM users`,
		`SELECT coalesce(string_agg(concat_ws(',', name, parent_id, active), '|' ORDER BY name), '') FROM departments`,
		`SELECT count(*)::text FROM user_history`,
		`SELECT count(*)::text FROM run_files WHERE status = 'applied'`,
	} {
		var s string
		if err := db.Get(&s, q); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n#\n")
}

// TestPostgresRestartMidApply: PostgreSQL restarted (pg_ctl restart -m
// fast) inside a user file's apply transaction fails the run as a system
// failure with nothing of the file applied, departments it created
// included; the next run applies it. Then the restart is let loose while
// the users are being written: whatever moment it hits, the file is either
// applied whole or not at all.
func TestPostgresRestartMidApply(t *testing.T) {
	url, restart := dedicatedCluster(t)
	t.Setenv("DATABASE_URL", url)
	db, _ := pgtest.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, o fixtures.UserOptions) string {
		var b bytes.Buffer
		fixtures.WriteUsers(&b, o) //nolint:errcheck
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := write("before.csv", fixtures.UserOptions{Rows: 100, Seed: 1})
	const rows = 10_000
	big := write("users.csv", fixtures.UserOptions{Rows: rows, Seed: 2})

	for trial, async := range []bool{false, true} {
		tenant := fmt.Sprintf("restart-%d", trial)
		putTenant(t, db, tenant, nil)
		rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: quiet}
		tdb := func() string { return dirState(t, db) } // trials run one after another
		req := func(path string) pipeline.Request {
			return pipeline.Request{Tenant: tenant, LogicalDate: day(t, defaultDate), Files: []*pipeline.File{{Name: filepath.Base(path), Source: path}}}
		}
		if res, err := rn.Run(ctx, req(before)); err != nil || res.Status != pipeline.RunSucceeded {
			t.Fatalf("trial %d: the first file: %v %+v", trial, err, res)
		}
		was := tdb()

		restarted := make(chan error, 1)
		r := req(big)
		r.BeforeUsers = func(ctx context.Context, tx *sqlx.Tx) error {
			if async {
				// Land while users are being COPYed and written.
				go func() { time.Sleep(50 * time.Millisecond); restarted <- restart() }()
				return nil
			}
			restarted <- restart()
			return nil
		}
		started := time.Now()
		res, err := rn.Run(ctx, r)
		if rerr := <-restarted; rerr != nil {
			t.Fatal(rerr)
		}
		t.Logf("trial %d (restart %s): run %v after %s: %+v", trial, map[bool]string{false: "between departments and users", true: "50 ms into the users"}[async],
			err, time.Since(started).Round(time.Millisecond), res)
		var applied int
		if err := db.Get(&applied, `SELECT count(*) FROM run_files WHERE tenant_id = $1 AND name = 'users.csv' AND status = 'applied'`, tenant); err != nil {
			t.Fatal(err)
		}
		switch {
		case applied == 0:
			// The run failed: as a system failure, recorded as such (by the
			// run itself, or by the next one if the ledger was unreachable).
			if err == nil && (res.Status != pipeline.RunFailed || res.FailureClass != pipeline.ClassSystem) {
				t.Fatalf("trial %d: run %s/%s, want failed/system", trial, res.Status, res.FailureClass)
			}
			if got := tdb(); got != was {
				t.Fatalf("trial %d: the restart left the file half-applied", trial)
			}
		case async && err == nil && res.Status == pipeline.RunSucceeded:
			t.Logf("trial %d: the restart came after the commit; the file was applied whole", trial)
		default:
			t.Fatalf("trial %d: the file is recorded applied %d times after run %+v, %v", trial, applied, res, err)
		}

		// The next run (the next poll) applies the file.
		res2, err := rn.Run(ctx, req(big))
		if err != nil {
			t.Fatalf("trial %d: the run after the restart: %v", trial, err)
		}
		// (When the first run had applied it, this one is a duplicate.)
		if res2.Status != pipeline.RunSucceeded {
			t.Fatalf("trial %d: the run after the restart: %s (%s)", trial, res2.Status, res2.Reason)
		}
		var users int
		if err := db.Get(&users, `SELECT count(*) FROM users WHERE tenant_id = $1`, tenant); err != nil || users != rows {
			t.Fatalf("trial %d: %d users after the re-run (%v), want %d", trial, users, err, rows)
		}
		var failed int
		if err := db.Get(&failed, `SELECT count(*) FROM runs WHERE tenant_id = $1 AND status = 'failed' AND failure_class = 'system' AND failure_reason <> ''`, tenant); err != nil {
			t.Fatal(err)
		}
		if applied == 0 && failed != 1 {
			t.Fatalf("trial %d: %d runs failed as system failures with a reason, want 1", trial, failed)
		}
	}
}
