package diff

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

// loadUsersByColumn is the obvious way to read the snapshot, one column
// per field through database/sql: the reference loadUsers' binary COPY
// read must equal.
func loadUsersByColumn(t *testing.T, db *sqlx.DB, tenant string) *users {
	t.Helper()
	rows, err := db.Query(`SELECT u.id, u.employee_id, u.email, u.first_name, u.last_name,
		COALESCE(u.manager_id, 0), COALESCE(d.name_key, ''), u.title, u.location,
		(u.start_date - DATE '1970-01-01'), (u.deactivation_date - DATE '1970-01-01'), u.custom::text, u.active
		FROM users u LEFT JOIN departments d ON d.id = u.department_id
		WHERE u.tenant_id = $1 ORDER BY u.id`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	u := &users{}
	for rows.Next() {
		var (
			id, mgr                                    int64
			eid                                        sql.NullString
			email, first, last, dept, title, loc, cust string
			sd, dd                                     sql.NullInt32
			active                                     bool
		)
		if err := rows.Scan(&id, &eid, &email, &first, &last, &mgr, &dept, &title, &loc, &sd, &dd, &cust, &active); err != nil {
			t.Fatal(err)
		}
		u.id = append(u.id, id)
		u.st = append(u.st, state{eid: eid.String, hasEID: eid.Valid, email: email, first: first, last: last,
			mgr: mgr, mgrRow: -1, deptKey: dept, title: title, loc: loc, start: sd.Int32, hasStart: sd.Valid,
			deact: dd.Int32, hasDeact: dd.Valid, custom: canonicalJSON(cust), active: active})
		if active {
			u.active++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSnapshotEqualsColumns: the binary COPY read gives every field of
// every user exactly as the column-by-column read, for the values that
// could break a reader of lengths and bytes (multi-byte text, where bytes
// and characters differ; control characters; dates before 1970 and on a
// leap day; empty and NULL values; jsonb beyond {}).
func TestSnapshotEqualsColumns(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	db.MustExec(`INSERT INTO tenants (id) VALUES ('t'), ('other')`)
	db.MustExec(`INSERT INTO departments (tenant_id, name, name_key) VALUES ('t', 'Ünïcode 部門', 'ünïcode 部門'), ('t', '12:34', '12:34')`)
	db.MustExec(`INSERT INTO users (tenant_id, employee_id, email, first_name, last_name, manager_id, department_id, title, location,
		start_date, deactivation_date, custom, active) VALUES
		('t', NULL, 'no-id@example.com', '', '', NULL, NULL, '', '', NULL, NULL, '{}', true),
		('t', '-', '3:abc@example.com', '4:x', '-:', 1, (SELECT id FROM departments WHERE name_key = '12:34'), '0:', ':', '2020-02-29', NULL, '{"b": "2", "a": "1"}', true),
		('t', '000123', 'zoë@例え.jp', 'Zoë', 'Ørsted 🎉', 2, (SELECT id FROM departments WHERE name_key = 'ünïcode 部門'), E'tab\there', E'line\nbreak\\back', '1969-12-31', '2026-01-01', '{"k": "v:1"}', false),
		('t', '', 'empty-id@example.com', E'\x01', 'x', NULL, NULL, repeat('é', 300), repeat('1', 40), NULL, '1970-01-01', '{"n": {"deep": [1, 2]}}', true),
		('other', '1', 'other@example.com', 'O', 'T', NULL, NULL, '', '', NULL, NULL, '{}', true)`)
	got, err := loadUsers(ctx, db, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := loadUsersByColumn(t, db, "t")
	if got.len() != 4 {
		t.Fatalf("%d users read, want the tenant's 4", got.len())
	}
	if !reflect.DeepEqual(got.id, want.id) || got.active != want.active {
		t.Errorf("ids %v, %d active; columns: %v, %d active", got.id, got.active, want.id, want.active)
	}
	for i := range want.st {
		if i < len(got.st) && !reflect.DeepEqual(got.st[i], want.st[i]) {
			t.Errorf("user %d: copy    %+v\n        columns %+v", want.id[i], got.st[i], want.st[i])
		}
	}
	if j, ok := got.byEID["000123"]; !ok || got.st[j].email != "zoë@例え.jp" {
		t.Errorf("byEID[000123] = %d, %v", j, ok)
	}
	if _, ok := got.byEmail["zoë@例え.jp"]; ok {
		t.Errorf("an inactive user is indexed as active")
	}
}

// TestSnapshotInTableOrder: the snapshot is read in the table's order and
// sorted by id when that is not id order (users written by id out of
// order, as updates leave them), and then equals the read in id order.
func TestSnapshotInTableOrder(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	db.MustExec(`INSERT INTO tenants (id) VALUES ('t')`)
	// 300 users, ids in a fixed shuffled order: 7 and 300 are coprime.
	db.MustExec(`INSERT INTO users (id, tenant_id, employee_id, email, manager_id, active)
		SELECT 1000 + (g * 7) % 300, 't', 'e' || ((g * 7) % 300), 'u' || ((g * 7) % 300) || '@example.com',
			NULLIF(1000 + ((g * 7) % 300) / 2, 1000 + (g * 7) % 300), (g * 7) % 300 % 5 <> 0
		FROM generate_series(0, 299) g ORDER BY g`)
	var physical []int64
	if err := db.Select(&physical, `SELECT id FROM users WHERE tenant_id = 't' ORDER BY ctid`); err != nil {
		t.Fatal(err)
	}
	if slices.IsSorted(physical) {
		t.Fatal("the table holds the users in id order: the test would not test the sort")
	}
	got, err := loadUsers(ctx, db, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := loadUsersByColumn(t, db, "t")
	if !reflect.DeepEqual(got.id, want.id) || !reflect.DeepEqual(got.st, want.st) || got.active != want.active {
		t.Fatalf("read in table order and sorted differs from the read in id order")
	}
	for j, id := range want.id {
		if got.index(id) != j {
			t.Fatalf("index(%d) = %d, want %d", id, got.index(id), j)
		}
		if want.st[j].active && got.byEmail[want.st[j].email] != j {
			t.Fatalf("byEmail[%s] = %d, want %d", want.st[j].email, got.byEmail[want.st[j].email], j)
		}
	}
}

func TestSortByID(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 10, 1000} {
		for _, order := range []string{"sorted", "reversed", "shuffled"} {
			u := &users{}
			for i := 0; i < n; i++ {
				u.id = append(u.id, int64(i*3+1))
			}
			switch order {
			case "reversed":
				slices.Reverse(u.id)
			case "shuffled":
				rng.Shuffle(n, func(i, j int) { u.id[i], u.id[j] = u.id[j], u.id[i] })
			}
			for _, id := range u.id {
				u.st = append(u.st, state{email: fmt.Sprint(id)}) // each state knows its id
			}
			u.sortByID()
			if !slices.IsSorted(u.id) {
				t.Fatalf("%d %s: ids not sorted: %v", n, order, u.id)
			}
			for i, id := range u.id {
				if u.st[i].email != fmt.Sprint(id) {
					t.Fatalf("%d %s: place %d holds id %d with the state of %s", n, order, i, id, u.st[i].email)
				}
			}
		}
	}
}
