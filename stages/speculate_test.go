package stages_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/apply"
)

// TestSpeculationMatchesThePlan sends first loads that diff must decide
// row by row (rows in random order, so many managers come after their
// reports; manager loops, self-references and unknown managers; duplicate
// rows; rows without an id; a department the tenant deactivated) to four
// fresh tenants each, one for each of apply's ways to a first load: with
// its speculation (on every file, in batches of 50 rows, so most rows are
// sent before diff has decided them), with a bulk load into a partition of
// the tenant's own (stages/apply/bulk.go), with both, and with neither.
// The outcome must be the same: status, counts, issues, the directory and
// its history. The speculations must have been kept, and mended: rows held
// back and sent after the plan, and rows sent that the plan has otherwise
// (the first user of the deactivated department, whom diff warns about),
// deleted and sent again.
func TestSpeculationMatchesThePlan(t *testing.T) {
	db, _ := pgtest.New(t)
	var log specLog
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: log.log()}
	today := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	const seeds = 8
	for seed := 1; seed <= seeds; seed++ {
		g := newPopulation(uint64(seed), 400)
		for d := 0; d < 40; d++ {
			g.mutate(today.AddDate(0, 0, d-40))
		}
		path := filepath.Join(t.TempDir(), "users.csv")
		g.write(t, path)
		outcome := func(tenant string, opts pipeline.Options) stepOutcome {
			putTenant(t, db, tenant, nil)
			// A department the tenant has, deactivated: the file's first
			// row in it is applied with a warning, and so without a digest.
			if _, err := db.Exec(`INSERT INTO departments (tenant_id, name, name_key, active) VALUES ($1, 'Support', 'support', false)`, tenant); err != nil {
				t.Fatal(err)
			}
			res, err := rn.Run(context.Background(), pipeline.Request{Tenant: tenant, LogicalDate: today,
				Files:     []*pipeline.File{{Name: "users.csv", Source: path, ModTime: today}},
				Overrides: map[string]pipeline.Options{"parse": {"batch_rows": 50}, "apply": opts}})
			if err != nil {
				t.Fatalf("seed %d, %s: %v", seed, tenant, err)
			}
			f := res.Files[0]
			if f.Status == pipeline.StatusFailed {
				t.Fatalf("seed %d, %s: failed: %v", seed, tenant, f.Err)
			}
			return stepOutcome{Status: f.Status, Counts: f.Counts, Issues: f.Issues.List(), Directory: snapshot(t, db, tenant)}
		}
		plain := outcome(fmt.Sprint("plain-", seed), plainApply)
		if plain.Counts.Created < 300 {
			t.Fatalf("seed %d: %d users created; the file should be mostly new users", seed, plain.Counts.Created)
		}
		for _, way := range []struct {
			name string
			opts pipeline.Options
		}{
			{"spec", pipeline.Options{apply.OptSpeculate: true, apply.OptSpeculateMinRows: 0, apply.OptBulkMinRows: 0}},
			{"bulk", pipeline.Options{apply.OptSpeculate: false, apply.OptBulkMinRows: 1}},
			{"spec-bulk", speculateAndBulk},
		} {
			if got := outcome(fmt.Sprint(way.name, "-", seed), way.opts); !reflect.DeepEqual(got, plain) {
				t.Fatalf("seed %d: %s and plain, the outcomes differ\n%s\nfile:\n%s", seed, way.name, disagreement(got, plain), readFile(t, path))
			}
		}
	}
	if log.kept != 2*seeds || log.resent < 2*seeds || log.dropped < 2*seeds || log.bulks != 2*seeds {
		t.Errorf("%d of %d speculations kept, %d of them with rows sent after the plan, %d with rows deleted; %d of %d bulk loads: "+
			"the test proves nothing unless every speculation was kept and mended both ways, and every bulk load made",
			log.kept, 2*seeds, log.resent, log.dropped, log.bulks, 2*seeds)
	}
	speculationUndone(t, db, rn)
	speculationTooFewForBulk(t, db, rn)
}

// speculationUndone: a department only a rejected row names is one the
// speculation created and the plan does not; it is undone whole, and the
// file applies as without it.
func speculationUndone(t *testing.T, db *sqlx.DB, rn *pipeline.Runner) {
	got, log := sameFileTwoWays(t, db, rn, "undone", speculateAndBulk, `[
  {"employee_id": "1", "email": "ada@example.com", "first_name": "Ada", "last_name": "King", "department_name": "Board"},
  {"employee_id": "2", "email": "x@example.com", "last_name": "Nofirst", "department_name": "Orphans"},
  {"employee_id": "3", "email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper", "manager_email": "ada@example.com"}
]`)
	if got.Counts.Created != 2 || log.undone != 1 || log.kept != 0 {
		t.Errorf("undone speculation: %d created, %d speculations undone, %d kept; want 2, 1, 0", got.Counts.Created, log.undone, log.kept)
	}
}

// speculationTooFewForBulk: a speculation chooses a bulk load by the rows
// validate accepted, 3 here against bulk_min_rows 3; diff then rejects one
// (a new user without a first name), and a plan of 2 new users is too few
// for a partition of the tenant's own. The speculation is undone, and the
// file applies into users_default as without it.
func speculationTooFewForBulk(t *testing.T, db *sqlx.DB, rn *pipeline.Runner) {
	got, log := sameFileTwoWays(t, db, rn, "few", pipeline.Options{apply.OptSpeculate: true, apply.OptSpeculateMinRows: 0, apply.OptBulkMinRows: 3}, `[
  {"employee_id": "1", "email": "ada@example.com", "first_name": "Ada", "last_name": "King", "department_name": "Board"},
  {"employee_id": "2", "email": "x@example.com", "last_name": "Nofirst"},
  {"employee_id": "3", "email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper", "manager_email": "ada@example.com"}
]`)
	var parts int
	if err := db.Get(&parts, `SELECT count(*) FROM pg_class WHERE relname LIKE 'users_of_few-%'`); err != nil {
		t.Fatal(err)
	}
	if got.Counts.Created != 2 || log.undone != 1 || log.kept != 0 || log.bulks != 0 || parts != 0 {
		t.Errorf("too few for a bulk load: %d created, %d speculations undone, %d kept, %d bulk loads, %d relations of a partition; want 2, 1, 0, 0, 0",
			got.Counts.Created, log.undone, log.kept, log.bulks, parts)
	}
}

// sameFileTwoWays applies the JSON users file to two fresh tenants, named
// after the case, with apply's options opts and without speculation or
// bulk load, requires the same outcome, and returns it with what the
// first way's log said.
func sameFileTwoWays(t *testing.T, db *sqlx.DB, rn *pipeline.Runner, name string, opts pipeline.Options, json string) (stepOutcome, *specLog) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte(json), 0o600); err != nil {
		t.Fatal(err)
	}
	var log, plain specLog
	var got []stepOutcome
	for i, way := range []pipeline.Options{opts, plainApply} {
		tenant := fmt.Sprint(name, "-", i)
		putTenant(t, db, tenant, nil)
		r := *rn
		r.Log = []*specLog{&log, &plain}[i].log()
		res, err := r.Run(context.Background(), pipeline.Request{Tenant: tenant, Files: []*pipeline.File{{Name: "users.json", Source: path}},
			Overrides: map[string]pipeline.Options{"apply": way}})
		if err != nil {
			t.Fatal(err)
		}
		f := res.Files[0]
		got = append(got, stepOutcome{Status: f.Status, Counts: f.Counts, Issues: f.Issues.List(), Directory: snapshot(t, db, tenant)})
	}
	if !reflect.DeepEqual(got[0], got[1]) {
		t.Fatalf("%s: the outcomes differ\n%s", name, disagreement(got[0], got[1]))
	}
	return got[0], &log
}
