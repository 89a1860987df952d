package diff

import (
	"slices"
	"strings"
	"testing"

	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestReachSQLUsesIndexes: the users a nightly file's few changed rows
// reach are read through indexes, not by reading the whole tenant. In a
// tenant of 30,000 users, a tenth of them inactive, PostgreSQL's plan for
// reachSQL with a few ids, employee ids and e-mails scans no users whole;
// and the query selects exactly the users with one of those keys, active
// or not, each once, and none of another tenant's.
func TestReachSQLUsesIndexes(t *testing.T) {
	db, _ := pgtest.New(t)
	for _, tenant := range []string{"acme", "other"} {
		db.MustExec(`INSERT INTO tenants (id) VALUES ($1)`, tenant)
		db.MustExec(`INSERT INTO users (tenant_id, employee_id, email, active)
			SELECT $1, 'E' || g, 'u' || g || '@example.com', g % 10 <> 0 FROM generate_series(1, 30000) g`, tenant)
	}
	db.MustExec(`ANALYZE users`)
	id := func(eid string) int64 {
		var v int64
		if err := db.Get(&v, `SELECT id FROM users WHERE tenant_id = 'acme' AND employee_id = $1`, eid); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// E5 by id and by e-mail (once in the result); E7 by employee id; E20
	// (inactive) and E21 by e-mail; an e-mail and an id that are no one's.
	q := reachSQL("acme", []int64{id("E5"), -1}, []string{"E7", "nobody"}, []string{"u5@example.com", "u20@example.com", "u21@example.com", "x@example.com"})
	var plan []string
	if err := db.Select(&plan, `EXPLAIN `+q); err != nil {
		t.Fatal(err)
	}
	// Only users: how the few users' departments are joined is the
	// planner's choice on a table that small.
	if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan on users") {
		t.Errorf("the reach query reads the users whole:\n%s", p)
	}
	var got []int64
	if err := db.Select(&got, `SELECT id FROM (`+q+`) r ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	want := []int64{id("E5"), id("E7"), id("E20"), id("E21")}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the reach query selected users %v, want %v", got, want)
	}
}
