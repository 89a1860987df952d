package apply_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestNewUserIDsComeInBlocks: a file of new users takes its ids in blocks
// of the sequence's increment, one sequence value per block, and the ids
// never collide with each other, with a user inserted with the column
// default in between, or with the next file's.
func TestNewUserIDsComeInBlocks(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.New(t)
	if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	var inc int64
	if err := db.Get(&inc, `SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'users_id_seq'::regclass`); err != nil {
		t.Fatal(err)
	}
	if inc < 2 {
		t.Fatalf("users_id_seq counts by %d: migration 0006 makes it a block", inc)
	}
	next := func() int64 { // the value nextval would return now
		var last int64
		var called bool
		if err := db.QueryRow(`SELECT last_value, is_called FROM users_id_seq`).Scan(&last, &called); err != nil {
			t.Fatal(err)
		}
		if called {
			return last + inc
		}
		return last
	}
	file := func(from, n int) string {
		var b strings.Builder
		b.WriteString("employee_id,email,first_name,last_name\n")
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&b, "%d,u%d@example.com,F%d,L%d\n", i, i, i, i)
		}
		return b.String()
	}
	// 2.5 blocks: three sequence values.
	n := int(2*inc + inc/2)
	before := next()
	runFile(t, db, "acme", file(1, n), "2026-03-02")
	if got := next() - before; got != 3*inc {
		t.Errorf("%d new users advanced the sequence by %d, want 3 blocks of %d", n, got, inc)
	}
	var ids []int64
	if err := db.Select(&ids, `SELECT id FROM users WHERE tenant_id = 'acme' ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if len(ids) != n || ids[0] != before || ids[n-1] != before+int64(n)-1 {
		t.Fatalf("%d ids from %d to %d, want %d from %d", len(ids), ids[0], ids[len(ids)-1], n, before)
	}
	// A plain insert takes a value of its own; the next file's block
	// starts after it.
	var plain int64
	if err := db.Get(&plain, `INSERT INTO users (tenant_id, email) VALUES ('acme', 'plain@example.com') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	runFile(t, db, "acme", file(n+1, 3), "2026-03-03")
	var all []int64
	if err := db.Select(&all, `SELECT id FROM users WHERE tenant_id = 'acme'`); err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	if len(slices.Compact(all)) != n+4 || plain <= ids[n-1] {
		t.Errorf("%d distinct ids for %d users; the plain insert took %d (the file's last was %d)", len(all), n+4, plain, ids[n-1])
	}
}
