package apply_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/apply"
)

func date(s string) time.Time {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

// runFile applies one user file for the tenant on a logical date.
func runFile(t *testing.T, db *sqlx.DB, tenant, body, day string) *pipeline.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := rn.Run(context.Background(), pipeline.Request{Tenant: tenant, LogicalDate: date(day),
		Files: []*pipeline.File{{Name: "users.csv", Source: path}}})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Files[0]
	if f.Status != pipeline.StatusApplied || f.Issues.Total() > 0 {
		t.Fatalf("users.csv: %s %+v %v", f.Status, f.Issues.List(), f.Err)
	}
	return f
}

func activeOf(t *testing.T, db *sqlx.DB, tenant string) map[string]bool {
	t.Helper()
	var rows []struct {
		Email  string `db:"email"`
		Active bool   `db:"active"`
	}
	if err := db.Select(&rows, `SELECT email, active FROM users WHERE tenant_id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, r := range rows {
		m[r.Email] = r.Active
	}
	return m
}

func emails(us []apply.SweptUser) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Email)
	}
	return out
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.New(t)
	tn := pipeline.NewTenant("acme")
	if err := (pipeline.Tenants{DB: db}).Put(ctx, tn); err != nil {
		t.Fatal(err)
	}
	other := pipeline.NewTenant("other")
	if err := (pipeline.Tenants{DB: db}).Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	const file = `employee_id,email,first_name,last_name,deactivation_date
1,a@example.com,A,A,2026-03-05
2,b@example.com,B,B,2026-03-10
3,c@example.com,C,C,2026-03-05
4,d@example.com,D,D,
5,e@example.com,E,E,2026-01-31
`
	runFile(t, db, "acme", file, "2026-03-02")
	runFile(t, db, "other", file, "2026-03-02")
	want := map[string]bool{"a@example.com": true, "b@example.com": true, "c@example.com": true, "d@example.com": true, "e@example.com": false}
	check := func(tenant string) {
		t.Helper()
		got := activeOf(t, db, tenant)
		for e, a := range want {
			if got[e] != a {
				t.Errorf("%s: %s active = %v, want %v", tenant, e, got[e], a)
			}
		}
	}

	// Nothing is due before the first date.
	res, err := apply.Sweep(ctx, db, tn, apply.SweepOptions{Date: date("2026-03-04"), Trigger: pipeline.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Users) != 0 || res.RunID == 0 {
		t.Fatalf("sweep of 2026-03-04: %+v", res)
	}
	check("acme")

	// A dry run lists, changes nothing and records no run.
	var runsBefore int
	db.Get(&runsBefore, `SELECT count(*) FROM runs WHERE tenant_id = 'acme'`) //nolint:errcheck
	res, err = apply.Sweep(ctx, db, tn, apply.SweepOptions{Date: date("2026-03-05"), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := emails(res.Users); len(got) != 2 || got[0] != "a@example.com" || got[1] != "c@example.com" || res.RunID != 0 {
		t.Fatalf("dry sweep: %+v", res)
	}
	var runsAfter int
	db.Get(&runsAfter, `SELECT count(*) FROM runs WHERE tenant_id = 'acme'`) //nolint:errcheck
	if runsAfter != runsBefore {
		t.Errorf("a dry sweep recorded a run")
	}
	check("acme")

	// On the date, the users due are deactivated, with history, in a run.
	res, err = apply.Sweep(ctx, db, tn, apply.SweepOptions{Date: date("2026-03-05")})
	if err != nil {
		t.Fatal(err)
	}
	if got := emails(res.Users); len(got) != 2 || got[0] != "a@example.com" || got[1] != "c@example.com" {
		t.Fatalf("sweep of 2026-03-05: %+v", res)
	}
	want["a@example.com"], want["c@example.com"] = false, false
	check("acme")
	var run struct {
		Trigger string    `db:"trigger"`
		Status  string    `db:"status"`
		Date    time.Time `db:"logical_date"`
		Rows    int64     `db:"rows_out"`
	}
	if err := db.Get(&run, `SELECT r.trigger, r.status, r.logical_date, s.rows_out FROM runs r
		JOIN run_stages s ON s.run_id = r.id AND s.stage = 'sweep' WHERE r.id = $1`, res.RunID); err != nil {
		t.Fatal(err)
	}
	if run.Trigger != pipeline.TriggerScheduled || run.Status != pipeline.RunSucceeded || !run.Date.Equal(date("2026-03-05")) || run.Rows != 2 {
		t.Errorf("sweep run: %+v", run)
	}
	var hist []struct {
		Email string    `db:"email"`
		Eff   time.Time `db:"effective_date"`
		Field string    `db:"field"`
		Old   string    `db:"old_value"`
		New   string    `db:"new_value"`
	}
	if err := db.Select(&hist, `SELECT u.email, h.effective_date, h.field, h.old_value, h.new_value FROM user_field_history h
		JOIN users u ON u.id = h.user_id WHERE h.run_id = $1 AND h.action = 'deactivate' ORDER BY u.email`, res.RunID); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Email != "a@example.com" || hist[0].Field != "active" || hist[0].Old != "true" ||
		hist[0].New != "false" || !hist[0].Eff.Equal(date("2026-03-05")) {
		t.Errorf("history: %+v", hist)
	}
	// The other tenant is untouched.
	otherActive := activeOf(t, db, "other")
	if !otherActive["a@example.com"] || !otherActive["c@example.com"] {
		t.Errorf("the sweep of acme touched another tenant: %v", otherActive)
	}

	// Again for the same date: nothing left to do.
	res, err = apply.Sweep(ctx, db, tn, apply.SweepOptions{Date: date("2026-03-05")})
	if err != nil || len(res.Users) != 0 {
		t.Fatalf("second sweep: %+v %v", res, err)
	}

	// The same file the next day changes nothing: the sweep left the users
	// exactly as the file would have.
	f := runFile(t, db, "acme", file+"6,f@example.com,F,F,\n", "2026-03-06")
	if f.Counts.Unchanged != 5 || f.Counts.Created != 1 {
		t.Errorf("file after the sweep: %+v", f.Counts)
	}

	// A zero date is today in the tenant's time zone: 2026-03-11 01:00 UTC
	// is still 10 March in New York, when b is due.
	res, err = apply.Sweep(ctx, db, tn, apply.SweepOptions{Now: func() time.Time { return time.Date(2026, 3, 11, 1, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	if got := emails(res.Users); len(got) != 1 || got[0] != "b@example.com" || !res.Date.Equal(date("2026-03-10")) {
		t.Fatalf("sweep of today: %+v", res)
	}
	want["b@example.com"] = false
	check("acme")

	// A sweep waits for nobody: while a run holds the tenant, it fails at once.
	unlock, err := pipeline.LockTenant(ctx, db, "acme")
	if err != nil {
		t.Fatal(err)
	}
	_, err = apply.Sweep(ctx, db, tn, apply.SweepOptions{Date: date("2026-03-31")})
	unlock()
	if !errors.Is(err, pipeline.ErrTenantBusy) {
		t.Errorf("sweep of a busy tenant: %v, want ErrTenantBusy", err)
	}
}
