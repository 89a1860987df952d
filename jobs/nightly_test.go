package jobs_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

func TestDueFollowsTheTenantsClockAndZone(t *testing.T) {
	tn := pipeline.NewTenant("acme")
	tn.Timezone, tn.NightlyAt = "Europe/London", "02:30"
	cases := []struct {
		now  time.Time
		want string
	}{
		{time.Date(2026, 6, 10, 1, 0, 0, 0, time.UTC), "2026-06-09"},  // 02:00 in London (BST): not yet
		{time.Date(2026, 6, 10, 1, 31, 0, 0, time.UTC), "2026-06-10"}, // 02:31 in London
		{time.Date(2026, 1, 10, 2, 29, 0, 0, time.UTC), "2026-01-09"}, // 02:29 GMT
		{time.Date(2026, 1, 10, 23, 0, 0, 0, time.UTC), "2026-01-10"},
	}
	for _, c := range cases {
		if got := jobs.Due(tn, c.now).Format(time.DateOnly); got != c.want {
			t.Errorf("Due at %s = %s, want %s", c.now, got, c.want)
		}
	}
}

// TestNightlySweepRunsOncePerDateAcrossReplicas: a scheduled deactivation
// is carried out by the nightly job once its time passed in the tenant's
// zone, exactly once although two replicas check.
func TestNightlySweepRunsOncePerDateAcrossReplicas(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	tn := pipeline.NewTenant("acme")
	if err := (pipeline.Tenants{DB: db}).Put(ctx, tn); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "users.csv")
	os.WriteFile(path, []byte("employee_id,email,first_name,last_name,deactivation_date\n1,ada@example.com,Ada,Lovelace,2026-03-05\n2,bob@example.com,Bob,Smith,\n"), 0o644) //nolint:errcheck
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: dir}
	res, err := rn.Run(ctx, pipeline.Request{Tenant: "acme", LogicalDate: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		Files: []*pipeline.File{{Name: "users.csv", Source: path}}})
	if err != nil || res.Files[0].Counts.Created != 2 {
		t.Fatalf("setup run: %v %+v", err, res)
	}
	// 2026-03-05 01:00 in New York: the night's 02:00 has not come.
	early := time.Date(2026, 3, 5, 6, 0, 0, 0, time.UTC)
	late := time.Date(2026, 3, 5, 8, 0, 0, 0, time.UTC) // 03:00 in New York
	a := &jobs.Nightly{DB: db, Now: func() time.Time { return early }}
	if err := a.RunDue(ctx); err != nil {
		t.Fatal(err)
	}
	active := func() int {
		var n int
		db.Get(&n, `SELECT count(*) FROM users WHERE active`) //nolint:errcheck
		return n
	}
	if active() != 2 {
		t.Fatal("the sweep ran before the deactivation date was due")
	}
	var after []string
	record := func(_ context.Context, t *pipeline.Tenant, d time.Time) error {
		after = append(after, t.ID+" "+d.Format(time.DateOnly))
		return nil
	}
	b := &jobs.Nightly{DB: db, Now: func() time.Time { return late }, After: record}
	a.Now, a.After = b.Now, record
	for _, n := range []*jobs.Nightly{a, b, a} {
		if err := n.RunDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if active() != 1 {
		t.Fatalf("%d active users after the nightly sweep, want 1", active())
	}
	var sweeps, claims int
	db.Get(&sweeps, `SELECT count(*) FROM user_history WHERE action = 'deactivate'`)                            //nolint:errcheck
	db.Get(&claims, `SELECT count(*) FROM job_runs WHERE logical_date = '2026-03-05' AND status = 'succeeded'`) //nolint:errcheck
	if sweeps != 1 || claims != 1 {
		t.Fatalf("%d deactivation history rows and %d claims for the date, want 1 and 1", sweeps, claims)
	}
	// The work after the sweep (the export) ran once for the date too.
	if len(after) != 1 || after[0] != "acme 2026-03-05" {
		t.Fatalf("after-sweep work ran for %v, want once for acme 2026-03-05", after)
	}
}
