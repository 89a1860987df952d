package diff

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
)

// users is a tenant's current user snapshot: the ids, ascending, and each
// user's state beside them. One struct per user, not a slice per field:
// decide reads a user's whole state, for rows in any order, and sixteen
// slices meant sixteen cache misses where one struct is three lines (a
// million random reads: 80-215 ms → 41 ms, measured alone).
type users struct {
	id []int64
	st []state // mgrRow -1; start and deact in days since 1970; custom a JSON object
	// active counts the active users (the guards ask more than once).
	active int

	byEID        map[string]int
	byEmail      map[string]int // active users
	byEmailInact map[string]int // most recent inactive user per e-mail
	ids          idIndex        // places by id
}

func (u *users) len() int { return len(u.id) }

// sortByID puts the users in id order, moving each state once (a state is
// ~150 bytes: sorting the pairs themselves would move them ~20 times).
func (u *users) sortByID() {
	perm := make([]int32, len(u.id)) // perm[i]: the user that goes to place i
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(a, b int32) int { return cmp.Compare(u.id[a], u.id[b]) })
	// Each cycle of the permutation in turn, with one user held aside.
	for i := range perm {
		if int(perm[i]) == i {
			continue
		}
		id, st := u.id[i], u.st[i]
		j := i
		for {
			k := int(perm[j])
			perm[j] = int32(j)
			if k == i {
				u.id[j], u.st[j] = id, st
				break
			}
			u.id[j], u.st[j] = u.id[k], u.st[k]
			j = k
		}
	}
}

// index returns the snapshot index of the user with this id, or -1 (see
// idIndex; build makes it).
func (u *users) index(id int64) int { return u.ids.find(id) }

// loadUsers reads the tenant's users, about n of them: the count sizes the
// slices (growing them to a million entries cost ~0.7 s of copying on the
// 1M-row benchmark), and diff has it from the row digests it read first.
func loadUsers(ctx context.Context, db *sqlx.DB, tenant string, n int) (*users, error) {
	return readUsers(ctx, db, fmt.Sprintf(snapshotSQL, pipeline.QuoteLiteral(tenant)), n)
}

// readUsers reads the users query selects (snapshotSQL's columns), n of
// them expected, and indexes them.
func readUsers(ctx context.Context, db *sqlx.DB, query string, n int) (*users, error) {
	u := &users{id: make([]int64, 0, n), st: make([]state, 0, n)}
	var ar arena
	if err := u.read(ctx, db, query, &ar); err != nil {
		return nil, err
	}
	u.build()
	return u, nil
}

// read appends the users query selects (snapshotSQL's columns). The text
// is kept in a chunked arena: a million users would otherwise be ten
// million small allocations.
func (u *users) read(ctx context.Context, db *sqlx.DB, query string, ar *arena) error {
	_, err := pipeline.CopyOut(ctx, db, query, func(f [][]byte) error {
		if err := u.add(f, ar); err != nil {
			return fmt.Errorf("user %d: %w", len(u.id)+1, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("diff: read users: %w", err)
	}
	return nil
}

// build sorts the users read by id and builds the lookups.
func (u *users) build() {
	if !slices.IsSorted(u.id) {
		u.sortByID()
	}
	u.ids = newIDIndex(u.id)
	// The indexes are built once the size is known (presizing them from
	// the file's rows made a first load allocate a million-entry map for an
	// empty tenant). The id map and the e-mail maps are independent: one
	// is built on each core (0.5 s for a million users on one), which
	// beat filling them as the rows arrive (1M users: 1.7-2.0 s → 2.2 s).
	u.byEID, u.byEmail, u.byEmailInact = make(map[string]int, u.len()), make(map[string]int, u.len()), map[string]int{}
	pipeline.Each(func() {
		for i := range u.id {
			if u.st[i].hasEID {
				u.byEID[u.st[i].eid] = i
			}
		}
	}, func() {
		for i := range u.id {
			if u.st[i].active {
				u.byEmail[u.st[i].email] = i
			} else {
				u.byEmailInact[u.st[i].email] = i // ordered by id: the latest wins
			}
		}
	})
}

// snapshotSQL reads the users of tenant %s (a quoted literal: COPY takes
// no parameters) through pipeline.CopyOut: the binary COPY stream, parsed
// in place, instead of database/sql's decode, conversion and allocation
// per column and row (1M users: ~1.3 s of CPU beside the parse the read
// overlaps). add reads the columns in this order.
//
// In the table's order, not id order: ORDER BY u.id made the server walk
// the primary key over every tenant's users (a filter, not an index
// condition) or sort the tenant's, and cost 0.23 s of the server's 1.41
// on a 1M-user tenant alone in its table. Rows come in id order anyway
// while a tenant's users were only ever COPYed in; loadUsers sorts them
// when updates have moved some.
const snapshotSQL = usersSQL + ` WHERE u.tenant_id = %s`

// usersSQL selects the users' state, in the columns add reads; the
// caller adds the WHERE clause.
const usersSQL = `SELECT u.id, u.manager_id, u.start_date, u.deactivation_date, u.active,
		u.employee_id, u.email, u.first_name, u.last_name, d.name_key, u.title, u.location, u.custom
		FROM users u LEFT JOIN departments d ON d.id = u.department_id`

// pgEpochDays is 2000-01-01, PostgreSQL's date zero, in days since 1970.
const pgEpochDays = 10957

// add appends one row of snapshotSQL, its columns in PostgreSQL's binary
// format.
func (u *users) add(f [][]byte, ar *arena) error {
	if len(f) != 13 {
		return fmt.Errorf("%d columns, want 13", len(f))
	}
	id, err := binInt8(f[0], "id")
	if err != nil {
		return err
	}
	var mgr int64
	if f[1] != nil {
		if mgr, err = binInt8(f[1], "manager_id"); err != nil {
			return err
		}
	}
	sd, hasSD, err := binDate(f[2], "start_date")
	if err != nil {
		return err
	}
	dd, hasDD, err := binDate(f[3], "deactivation_date")
	if err != nil {
		return err
	}
	if len(f[4]) != 1 {
		return fmt.Errorf("active: %d bytes", len(f[4]))
	}
	// NOT NULL in the schema: a NULL here means a damaged read.
	for _, c := range [...]struct {
		i    int
		name string
	}{{6, "email"}, {7, "first_name"}, {8, "last_name"}, {10, "title"}, {11, "location"}} {
		if f[c.i] == nil {
			return fmt.Errorf("%s is NULL", c.name)
		}
	}
	cust := f[12]
	if len(cust) == 0 || cust[0] != 1 {
		return fmt.Errorf("custom: not jsonb version 1")
	}
	active := f[4][0] != 0
	cust = cust[1:]
	custom := "{}"
	if len(cust) != 2 || cust[0] != '{' || cust[1] != '}' {
		custom = canonicalJSON(string(cust))
	}
	u.id = append(u.id, id)
	u.st = append(u.st, state{eid: ar.str(f[5]), hasEID: f[5] != nil, email: ar.str(f[6]), first: ar.str(f[7]), last: ar.str(f[8]),
		mgr: mgr, mgrRow: -1, deptKey: ar.str(f[9]), title: ar.str(f[10]), loc: ar.str(f[11]),
		start: sd, hasStart: hasSD, deact: dd, hasDeact: hasDD, custom: custom, active: active})
	if active {
		u.active++
	}
	return nil
}

func binInt8(b []byte, col string) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%s: %d bytes, want 8", col, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// binDate reads a date as days since 1970-01-01; false for NULL.
func binDate(b []byte, col string) (int32, bool, error) {
	if b == nil {
		return 0, false, nil
	}
	if len(b) != 4 {
		return 0, false, fmt.Errorf("%s: %d bytes, want 4", col, len(b))
	}
	d := int32(binary.BigEndian.Uint32(b))
	if d == math.MaxInt32 || d == math.MinInt32 || d > math.MaxInt32-pgEpochDays {
		return 0, false, fmt.Errorf("%s: infinite or out of range", col)
	}
	return d + pgEpochDays, true, nil
}

// arena hands out strings that share large byte chunks. A chunk is never
// written again once a string points into it; a full chunk is left to the
// strings that use it and a new one started.
type arena struct{ buf []byte }

func (a *arena) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(a.buf)-len(a.buf) < len(b) {
		a.buf = make([]byte, 0, max(1<<20, len(b)))
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[start], len(b))
}

// canonicalJSON re-encodes a stored custom object the way mergeCustom
// encodes a row's (sorted keys, no spaces). PostgreSQL prints jsonb as
// {"a": "b"}, so comparing its text with the row's {"a":"b"} made every row
// with custom columns an update even when nothing changed.
func canonicalJSON(s string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return s
	}
	b, err := json.Marshal(m)
	if err != nil {
		return s
	}
	return string(b)
}

// departments is a tenant's department snapshot.
type departments struct {
	id     []int64
	name   []string
	key    []string
	parent []int64 // 0: none
	active []bool
	byKey  map[string]int
	byID   map[int64]int
	// activeUsers counts active users per department id.
	activeUsers map[int64]int
}

// loadDepartments reads the tenant's departments and, when counts is set
// (a departments file, which may deactivate some), how many active users
// each has. The counts are one grouped scan of the tenant's active users:
// a count per department without a tenant filter scanned every tenant's
// users once per department, which made a poll of many tenants slower with
// each tenant applied.
func loadDepartments(ctx context.Context, db *sqlx.DB, tenant string, counts bool) (*departments, error) {
	rows, err := db.QueryContext(ctx, `SELECT d.id, d.name, d.name_key, COALESCE(d.parent_id, 0), d.active
		FROM departments d WHERE d.tenant_id = $1 ORDER BY d.id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("diff: read departments: %w", err)
	}
	defer rows.Close()
	d := &departments{byKey: map[string]int{}, byID: map[int64]int{}, activeUsers: map[int64]int{}}
	for rows.Next() {
		var id, parent int64
		var name, key string
		var active bool
		if err := rows.Scan(&id, &name, &key, &parent, &active); err != nil {
			return nil, fmt.Errorf("diff: read departments: %w", err)
		}
		i := len(d.id)
		d.id = append(d.id, id)
		d.name = append(d.name, name)
		d.key = append(d.key, key)
		d.parent = append(d.parent, parent)
		d.active = append(d.active, active)
		d.byKey[key] = i
		d.byID[id] = i
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("diff: read departments: %w", err)
	}
	if !counts {
		return d, nil
	}
	var n []struct {
		ID    int64 `db:"department_id"`
		Users int   `db:"users"`
	}
	if err := db.SelectContext(ctx, &n, `SELECT department_id, count(*) AS users FROM users
		WHERE tenant_id = $1 AND active AND department_id IS NOT NULL GROUP BY department_id`, tenant); err != nil {
		return nil, fmt.Errorf("diff: count users per department: %w", err)
	}
	for _, c := range n {
		d.activeUsers[c.ID] = c.Users
	}
	return d, nil
}
