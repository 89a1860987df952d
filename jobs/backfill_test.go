package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

// directory is a tenant's directory by content (ids differ between
// databases), with its history.
func directory(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var parts []string
	for _, q := range []string{
		`SELECT coalesce(string_agg(concat_ws(',', u.employee_id, u.email, u.first_name, u.title, m.email, u.deactivation_date, u.active, u.created_run_id IS NOT NULL), '|' ORDER BY u.email), '')
			FROM users u LEFT JOIN users m ON m.id = u.manager_id`,
		`SELECT coalesce(string_agg(concat_ws(',', h.action, h.effective_date, u.email, h.changes - 'manager_id'), '|' ORDER BY h.effective_date, u.email, h.action), '')
			FROM user_history h JOIN users u ON u.id = h.user_id`,
	} {
		var s string
		if err := db.Get(&s, q); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

func newTenantDB(t *testing.T) *sqlx.DB {
	db, _ := pgtest.New(t)
	if err := (pipeline.Tenants{DB: db}).Put(context.Background(), pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestBackfillReplaysStagedDatesLikeTheOriginalRuns: five days of files run
// as they arrived; a backfill of those dates into a fresh database from
// staging alone gives the same directory and history; running it again
// changes nothing; an interrupted backfill resumes where it stopped.
func TestBackfillReplaysStagedDatesLikeTheOriginalRuns(t *testing.T) {
	ctx := context.Background()
	staging := t.TempDir()
	files := t.TempDir()
	day := func(i int) time.Time { return time.Date(2026, 4, 1+i, 0, 0, 0, 0, time.UTC) }
	bodies := []string{
		"employee_id,email,first_name,last_name,title,manager_email\n1,ada@example.com,Ada,Lovelace,CEO,\n2,bob@example.com,Bob,Smith,Engineer,ada@example.com\n",
		"employee_id,email,first_name,last_name,title,manager_email\n1,ada@example.com,Ada,Lovelace,CEO,\n2,bob@example.com,Bob,Smith,Senior Engineer,ada@example.com\n3,cy@example.com,Cy,Young,Analyst,bob@example.com\n",
		"employee_id,email,first_name,last_name,deactivation_date\n3,cy@example.com,Cy,Young,2026-04-03\n",
		"employee_id,email,first_name,last_name,title\n2,robert@example.com,Bob,Smith,Staff Engineer\n",
		"employee_id,email,first_name,last_name,deactivation_date\n3,cy@example.com,Cy,Young,\n",
	}
	original := newTenantDB(t)
	rn := &pipeline.Runner{DB: original, Registry: stages.Registry(), StagingDir: staging, Log: slog.New(slog.DiscardHandler)}
	for i, body := range bodies {
		p := filepath.Join(files, fmt.Sprintf("users-%d.csv", i))
		os.WriteFile(p, []byte(body), 0o644) //nolint:errcheck
		res, err := rn.Run(ctx, pipeline.Request{Tenant: "acme", LogicalDate: day(i), Files: []*pipeline.File{{Name: filepath.Base(p), Source: p}}})
		if err != nil || res.Status != pipeline.RunSucceeded {
			t.Fatalf("day %d: %v %+v", i, err, res)
		}
	}
	want := directory(t, original)
	// The originals may be gone: the backfill reads staging only.
	os.RemoveAll(files)

	backfill := func(db *sqlx.DB, progress func(jobs.Progress)) ([]jobs.Decision, error) {
		b := &jobs.Backfill{Runner: &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: staging, Log: slog.New(slog.DiscardHandler)},
			Tenant: "acme", From: day(0), To: day(4), Progress: progress}
		return b.Run(ctx)
	}
	fresh := newTenantDB(t)
	plan, err := backfill(fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range plan {
		if d.Decision != "run" || d.Status != pipeline.RunSucceeded {
			t.Fatalf("date %s: %s (%s) %s", d.Date, d.Decision, d.Reason, d.Status)
		}
	}
	if got := directory(t, fresh); got != want {
		t.Fatalf("backfilled directory differs:\n got %s\nwant %s", got, want)
	}
	var runs int
	fresh.Get(&runs, `SELECT count(*) FROM runs WHERE trigger = 'backfill'`) //nolint:errcheck
	if runs != 5 {
		t.Fatalf("%d backfill runs, want 5", runs)
	}
	again, err := backfill(fresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range again {
		if d.Decision != "skip" || !strings.Contains(d.Reason, "already done") {
			t.Fatalf("second backfill, date %s: %s (%s)", d.Date, d.Decision, d.Reason)
		}
	}
	if got := directory(t, fresh); got != want {
		t.Fatal("the second backfill changed the directory")
	}

	// Interrupted after two dates, then resumed.
	interrupted := newTenantDB(t)
	ictx, cancel := context.WithCancel(ctx)
	b := &jobs.Backfill{Runner: &pipeline.Runner{DB: interrupted, Registry: stages.Registry(), StagingDir: staging, Log: slog.New(slog.DiscardHandler)},
		Tenant: "acme", From: day(0), To: day(4), Progress: func(p jobs.Progress) {
			if p.Done == 2 {
				cancel()
			}
		}}
	if _, err := b.Run(ictx); err == nil {
		t.Fatal("the interrupted backfill reported success")
	}
	resumed, err := backfill(interrupted, nil)
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, d := range resumed {
		if d.Decision == "run" {
			ran++
		}
	}
	if ran != 3 {
		t.Fatalf("the resumed backfill ran %d dates, want the 3 left", ran)
	}
	if got := directory(t, interrupted); got != want {
		t.Fatal("the resumed backfill's directory differs from the original runs")
	}
}
