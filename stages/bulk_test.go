package stages_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/apply"
)

// TestBulkLoad: a first load of at least bulk_min_rows new users goes into
// a partition of the tenant's own, with every key users has (its
// partitioned indexes, attached, and a primary key on id), and nothing else
// does; later files apply to it as to any tenant; a failed bulk load leaves
// no table behind; and two bulk loads at once both apply (each takes the
// partitioned table's lock before it reads users, so neither deadlocks the
// other at the attach); a load whose attach is held off by a long reader of
// users_default puts its rows there instead; and a database role that may
// not create tables or attach them loads into users_default too, instead
// of failing the file. TestSpeculationMatchesThePlan and TestRules prove
// that a bulk load ends in the same directory as a plain one.
func TestBulkLoad(t *testing.T) {
	db, dbURL := pgtest.New(t)
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir()}
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	loadWith := func(rn *pipeline.Runner, tenant string, g *population, hook func(context.Context, *sqlx.Tx) error, opts pipeline.Options) *pipeline.File {
		t.Helper()
		if opts == nil {
			opts = pipeline.Options{apply.OptBulkMinRows: 100}
		}
		path := filepath.Join(t.TempDir(), "users.csv")
		g.write(t, path)
		res, err := rn.Run(context.Background(), pipeline.Request{Tenant: tenant, LogicalDate: day,
			Files:       []*pipeline.File{{Name: "users.csv", Source: path, ModTime: day}},
			Overrides:   map[string]pipeline.Options{"apply": opts},
			BeforeUsers: hook})
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		return res.Files[0]
	}
	load := func(tenant string, g *population, hook func(context.Context, *sqlx.Tx) error) *pipeline.File {
		t.Helper()
		return loadWith(rn, tenant, g, hook, nil)
	}
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := db.Get(&n, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	// own is the name of tenant's own partition, "" without one.
	own := func(tenant string) string {
		t.Helper()
		var names []string
		if err := db.Select(&names, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'users'::regclass AND pg_get_expr(c.relpartbound, c.oid) = $1`,
			fmt.Sprintf("FOR VALUES IN ('%s')", tenant)); err != nil {
			t.Fatal(err)
		}
		return strings.Join(names, ",")
	}

	putTenant(t, db, "acme", nil)
	g := newPopulation(1, 300)
	if f := load("acme", g, nil); f.Status != pipeline.StatusApplied || f.Counts.Created != 300 {
		t.Fatalf("acme's first load: %s, %d created (%v)", f.Status, f.Counts.Created, f.Err)
	}
	if p := own("acme"); p != "users_of_acme" {
		t.Fatalf("acme's own partition is %q, want users_of_acme", p)
	}
	if n := count(`SELECT count(*) FROM users_of_acme`); n != 300 {
		t.Errorf("users_of_acme holds %d users, want 300", n)
	}
	if n := count(`SELECT count(*) FROM users_default WHERE tenant_id = 'acme'`); n != 0 {
		t.Errorf("users_default holds %d of acme's users", n)
	}
	// Every partitioned index of users has its like attached in the
	// partition, and the partition has a primary key on id.
	var missing []string
	if err := db.Select(&missing, `SELECT pi.indexrelid::regclass::text FROM pg_index pi WHERE pi.indrelid = 'users'::regclass
		AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_index ci ON ci.indexrelid = i.inhrelid
			WHERE i.inhparent = pi.indexrelid AND ci.indrelid = 'users_of_acme'::regclass)`); err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 || count(`SELECT count(*) FROM pg_index WHERE indrelid = 'users'::regclass`) < 4 {
		t.Errorf("users_of_acme lacks users' indexes %v", missing)
	}
	if n := count(`SELECT count(*) FROM pg_constraint WHERE conrelid = 'users_of_acme'::regclass AND contype = 'p'
		AND pg_get_constraintdef(oid) = 'PRIMARY KEY (id)'`); n != 1 {
		t.Errorf("users_of_acme has %d primary keys on id, want 1", n)
	}
	// The keys hold: an active e-mail, an employee id (deferred: at the
	// commit) and an id that acme's users have are refused.
	for _, q := range []string{
		`INSERT INTO users (tenant_id, employee_id, email) SELECT 'acme', 'new-1', email FROM users WHERE tenant_id = 'acme' AND active LIMIT 1`,
		`INSERT INTO users (tenant_id, employee_id, email) SELECT 'acme', employee_id, 'new-1@example.com' FROM users WHERE tenant_id = 'acme' AND employee_id IS NOT NULL LIMIT 1`,
		`INSERT INTO users (id, tenant_id, email) SELECT id, 'acme', 'new-2@example.com' FROM users WHERE tenant_id = 'acme' LIMIT 1`,
	} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "duplicate key") {
			t.Errorf("%s: %v, want a duplicate key error", q, err)
		}
	}

	// A small tenant stays with the others.
	putTenant(t, db, "small", nil)
	if f := load("small", newPopulation(2, 20), nil); f.Status != pipeline.StatusApplied {
		t.Fatalf("small's first load: %s (%v)", f.Status, f.Err)
	}
	if p, n := own("small"), count(`SELECT count(*) FROM users_default WHERE tenant_id = 'small'`); p != "" || n != 20 {
		t.Errorf("small: own partition %q, %d users in users_default; want none and 20", p, n)
	}

	// Later files change acme in its partition.
	for d := 0; d < 5; d++ {
		g.mutate(day.AddDate(0, 0, d+1))
		f := load("acme", g, nil)
		if f.Status != pipeline.StatusApplied {
			t.Fatalf("acme, day %d: %s (%v)", d+1, f.Status, f.Err)
		}
	}
	if n, m := count(`SELECT count(*) FROM users_of_acme`), count(`SELECT count(*) FROM users WHERE tenant_id = 'acme'`); n != m || n < 300 {
		t.Errorf("acme has %d users, %d of them in its partition", m, n)
	}
	if n := count(`SELECT count(*) FROM user_history WHERE tenant_id = 'acme'`); n == 0 {
		t.Error("five days of changes left acme no history")
	}

	// A bulk load that fails after its table was made leaves none.
	putTenant(t, db, "boom", nil)
	fail := func(context.Context, *sqlx.Tx) error { return fmt.Errorf("injected failure") }
	if f := load("boom", newPopulation(3, 200), fail); f.Status != pipeline.StatusFailed {
		t.Fatalf("boom with a failure injected: %s", f.Status)
	}
	if n := count(`SELECT count(*) FROM pg_class WHERE relname = 'users_of_boom'`); n != 0 {
		t.Error("the failed bulk load left users_of_boom behind")
	}
	if f := load("boom", newPopulation(3, 200), nil); f.Status != pipeline.StatusApplied || own("boom") != "users_of_boom" {
		t.Errorf("boom again: %s, own partition %q (%v)", f.Status, own("boom"), f.Err)
	}

	// A transaction reading users_default holds the attach off (its lock
	// conflicts with every other): the load tries for bulk_attach_wait_ms,
	// then its rows go into users_default, and the file applies.
	putTenant(t, db, "held", nil)
	holder, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(`SELECT count(*) FROM users_default`); err != nil {
		t.Fatal(err)
	}
	f := loadWith(rn, "held", newPopulation(5, 200), nil, pipeline.Options{apply.OptBulkMinRows: 100, apply.OptBulkAttachWaitMS: 300})
	holder.Rollback() //nolint:errcheck // only ends the read
	if f.Status != pipeline.StatusApplied || f.Counts.Created != 200 {
		t.Fatalf("held, its attach held off: %s, %d created (%v)", f.Status, f.Counts.Created, f.Err)
	}
	if p, n := own("held"), count(`SELECT count(*) FROM users_default WHERE tenant_id = 'held'`); p != "" || n != 200 {
		t.Errorf("held: own partition %q, %d users in users_default; want none and 200", p, n)
	}
	if n := count(`SELECT count(*) FROM pg_class WHERE relname = 'users_of_held'`); n != 0 {
		t.Error("the bulk load that could not attach left users_of_held behind")
	}

	// Two at once. Each waits in its transaction, after it looked for
	// users, until the other has come as far (3 s at most): had both
	// looked, both would hold a read lock on users_default and wait at
	// the attach for the other's to end.
	var mu sync.Mutex
	arrived := 0
	both := make(chan struct{})
	meet := func(context.Context, *sqlx.Tx) error {
		mu.Lock()
		if arrived++; arrived == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(3 * time.Second):
		}
		return nil
	}
	var wg sync.WaitGroup
	files := make([]*pipeline.File, 2)
	for i, tenant := range []string{"twin-a", "twin-b"} {
		putTenant(t, db, tenant, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			files[i] = load(tenant, newPopulation(uint64(10+i), 200), meet)
		}()
	}
	wg.Wait()
	for i, f := range files {
		if f.Status != pipeline.StatusApplied {
			t.Errorf("twin %d of two bulk loads at once: %s (%v)", i, f.Status, f.Err)
		}
	}

	// A role with rights on the rows only: no bulk load, and no failure.
	role, roleURL := pgtest.Role(t, db, dbURL)
	for _, q := range []string{
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ` + role,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	appDB, err := pipeline.OpenDB(roleURL)
	if err != nil {
		t.Fatal(err)
	}
	defer appDB.Close()
	putTenant(t, db, "rowsonly", nil)
	app := *rn
	app.DB = appDB
	if f := loadWith(&app, "rowsonly", newPopulation(4, 200), nil, nil); f.Status != pipeline.StatusApplied {
		t.Fatalf("rowsonly, loaded by a role with rights on the rows only: %s (%v)", f.Status, f.Err)
	}
	if p, n := own("rowsonly"), count(`SELECT count(*) FROM users_default WHERE tenant_id = 'rowsonly'`); p != "" || n != 200 {
		t.Errorf("rowsonly: own partition %q, %d users in users_default; want none and 200", p, n)
	}
}
