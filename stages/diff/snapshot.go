package diff

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"unsafe"

	"github.com/jmoiron/sqlx"
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
	rows, err := db.QueryContext(ctx, `SELECT u.id, u.employee_id, u.email, u.first_name, u.last_name,
		COALESCE(u.manager_id, 0), COALESCE(d.name_key, ''), u.title, u.location,
		(u.start_date - DATE '1970-01-01'), (u.deactivation_date - DATE '1970-01-01'), u.custom::text, u.active
		FROM users u LEFT JOIN departments d ON d.id = u.department_id
		WHERE u.tenant_id = $1 ORDER BY u.id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("diff: read users: %w", err)
	}
	defer rows.Close()
	u := &users{}
	// Strings are scanned as raw bytes and kept in a chunked arena: a
	// million users would otherwise be ten million small allocations.
	var ar arena
	var (
		id, mgr                int64
		eid                    sql.RawBytes
		email, first, last     sql.RawBytes
		dept, title, loc, cust sql.RawBytes
		active                 bool
		sd, dd                 sql.NullInt32
	)
	for rows.Next() {
		if err := rows.Scan(&id, &eid, &email, &first, &last, &mgr, &dept, &title, &loc, &sd, &dd, &cust, &active); err != nil {
			return nil, fmt.Errorf("diff: read users: %w", err)
		}
		em := ar.str(email)
		u.id = append(u.id, id)
		u.eid = append(u.eid, ar.str(eid))
		u.hasEID = append(u.hasEID, eid != nil)
		u.email = append(u.email, em)
		u.first = append(u.first, ar.str(first))
		u.last = append(u.last, ar.str(last))
		u.manager = append(u.manager, mgr)
		u.deptKey = append(u.deptKey, ar.str(dept))
		u.title = append(u.title, ar.str(title))
		u.loc = append(u.loc, ar.str(loc))
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
	u.byEID, u.byEmail, u.byEmailInact = make(map[string]int, u.len()), make(map[string]int, u.len()), map[string]int{}
	for i := range u.id {
		if u.hasEID[i] {
			u.byEID[u.eid[i]] = i
		}
		if u.active[i] {
			u.byEmail[u.email[i]] = i
		} else {
			u.byEmailInact[u.email[i]] = i // ordered by id: the latest wins
		}
	}
	return u, nil
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
	if err := rows.Err(); err != nil || !counts {
		return d, err
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
