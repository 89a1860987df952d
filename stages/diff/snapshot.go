package diff

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"unsafe"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
)

// users is a tenant's current user snapshot, one slice per column.
type users struct {
	id                 []int64
	eid                []string
	hasEID             []bool
	email, first, last []string
	manager            []int64 // 0: none
	deptKey            []string
	title, loc         []string
	start, deact       []int32 // days since epoch
	hasStart, hasDeact []bool
	custom             []string // JSON object
	active             []bool

	byEID        map[string]int
	byEmail      map[string]int // active users
	byEmailInact map[string]int // most recent inactive user per e-mail
}

func (u *users) len() int { return len(u.id) }

// index returns the snapshot index of the user with this id, or -1. The
// snapshot is read in id order, so a binary search does what a map of a
// million ids did, without building it.
func (u *users) index(id int64) int {
	if i, ok := slices.BinarySearch(u.id, id); ok {
		return i
	}
	return -1
}

// loadUsers reads the tenant's users.
func loadUsers(ctx context.Context, db *sqlx.DB, tenant string) (*users, error) {
	// The count (an index-only scan) sizes the columns: growing thirteen
	// slices to a million entries cost ~0.7 s of copying on the 1M-row
	// benchmark, more than asking.
	var n int
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM users WHERE tenant_id = $1`, tenant); err != nil {
		return nil, fmt.Errorf("diff: count users: %w", err)
	}
	rows, err := db.QueryContext(ctx, snapshotSQL, tenant)
	if err != nil {
		return nil, fmt.Errorf("diff: read users: %w", err)
	}
	defer rows.Close()
	u := &users{id: make([]int64, 0, n), eid: make([]string, 0, n), hasEID: make([]bool, 0, n),
		email: make([]string, 0, n), first: make([]string, 0, n), last: make([]string, 0, n),
		manager: make([]int64, 0, n), deptKey: make([]string, 0, n), title: make([]string, 0, n), loc: make([]string, 0, n),
		start: make([]int32, 0, n), deact: make([]int32, 0, n), hasStart: make([]bool, 0, n), hasDeact: make([]bool, 0, n),
		custom: make([]string, 0, n), active: make([]bool, 0, n)}
	// The text is scanned as raw bytes and kept in a chunked arena: a
	// million users would otherwise be ten million small allocations.
	var ar arena
	var (
		id, mgr int64
		packed  sql.RawBytes
		active  bool
		sd, dd  sql.NullInt32
	)
	var txt [packedFields][]byte
	for rows.Next() {
		if err := rows.Scan(&id, &mgr, &sd, &dd, &active, &packed); err != nil {
			return nil, fmt.Errorf("diff: read users: %w", err)
		}
		cust, hasEID, err := unpack(packed, &txt)
		if err != nil {
			return nil, fmt.Errorf("diff: read users: user %d: %w", id, err)
		}
		u.id = append(u.id, id)
		u.eid = append(u.eid, ar.str(txt[0]))
		u.hasEID = append(u.hasEID, hasEID)
		u.email = append(u.email, ar.str(txt[1]))
		u.first = append(u.first, ar.str(txt[2]))
		u.last = append(u.last, ar.str(txt[3]))
		u.manager = append(u.manager, mgr)
		u.deptKey = append(u.deptKey, ar.str(txt[4]))
		u.title = append(u.title, ar.str(txt[5]))
		u.loc = append(u.loc, ar.str(txt[6]))
		u.start = append(u.start, sd.Int32)
		u.hasStart = append(u.hasStart, sd.Valid)
		u.deact = append(u.deact, dd.Int32)
		u.hasDeact = append(u.hasDeact, dd.Valid)
		if len(cust) == 2 && cust[0] == '{' && cust[1] == '}' {
			u.custom = append(u.custom, "{}")
		} else {
			u.custom = append(u.custom, canonicalJSON(string(cust)))
		}
		u.active = append(u.active, active)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("diff: read users: %w", err)
	}
	// The indexes are built once the size is known (presizing them from
	// the file's rows made a first load allocate a million-entry map for an
	// empty tenant).
	// The id map and the e-mail maps are independent: one built on each
	// core (0.5 s for a million users on one).
	u.byEID, u.byEmail, u.byEmailInact = make(map[string]int, u.len()), make(map[string]int, u.len()), map[string]int{}
	pipeline.Each(func() {
		for i := range u.id {
			if u.hasEID[i] {
				u.byEID[u.eid[i]] = i
			}
		}
	}, func() {
		for i := range u.id {
			if u.active[i] {
				u.byEmail[u.email[i]] = i
			} else {
				u.byEmailInact[u.email[i]] = i // ordered by id: the latest wins
			}
		}
	})
	return u, nil
}

// snapshotSQL reads the users of tenant $1 in id order. The seven text
// fields travel as one value, each prefixed with its length in bytes
// ("-" for a NULL employee_id), custom last: every column of a result
// costs the driver and database/sql a decode, a conversion and an
// allocation per row, which made reading a million users ~4 s of CPU
// beside the parse it overlaps. The value is built with ||, not concat():
// concat's per-argument type dispatch made the query twice as slow on the
// server (1M users: 2.06 → 1.12 s). snapshot_test.go proves this equals
// reading the columns one by one.
const snapshotSQL = `SELECT u.id, COALESCE(u.manager_id, 0),
		(u.start_date - DATE '1970-01-01'), (u.deactivation_date - DATE '1970-01-01'), u.active,
		COALESCE(octet_length(u.employee_id)::text || ':' || u.employee_id, '-:') ||
			octet_length(u.email)::text || ':' || u.email || octet_length(u.first_name)::text || ':' || u.first_name ||
			octet_length(u.last_name)::text || ':' || u.last_name || COALESCE(octet_length(d.name_key)::text || ':' || d.name_key, '0:') ||
			octet_length(u.title)::text || ':' || u.title || octet_length(u.location)::text || ':' || u.location || u.custom::text
		FROM users u LEFT JOIN departments d ON d.id = u.department_id
		WHERE u.tenant_id = $1 ORDER BY u.id`

// packedFields is how many length-prefixed fields snapshotSQL packs.
const packedFields = 7

// unpack splits snapshotSQL's packed value into its fields (slices of p)
// and returns the rest, the custom JSON; hasEID is false for a NULL id.
func unpack(p []byte, out *[packedFields][]byte) (rest []byte, hasEID bool, err error) {
	hasEID = true
	for f := 0; f < packedFields; f++ {
		colon := bytes.IndexByte(p, ':')
		if colon < 1 {
			return nil, false, fmt.Errorf("packed snapshot field %d: no length", f)
		}
		if f == 0 && colon == 1 && p[0] == '-' {
			hasEID, out[f], p = false, nil, p[2:]
			continue
		}
		n := 0
		for _, c := range p[:colon] {
			if c < '0' || c > '9' {
				return nil, false, fmt.Errorf("packed snapshot field %d: bad length %q", f, p[:colon])
			}
			n = n*10 + int(c-'0')
		}
		if colon+1+n > len(p) {
			return nil, false, fmt.Errorf("packed snapshot field %d: %d bytes announced, %d left", f, n, len(p)-colon-1)
		}
		out[f], p = p[colon+1:colon+1+n], p[colon+1+n:]
	}
	return p, hasEID, nil
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
