package diff

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

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

	byID         map[int64]int
	byEID        map[string]int
	byEmail      map[string]int // active users
	byEmailInact map[string]int // most recent inactive user per e-mail
}

func (u *users) len() int { return len(u.id) }

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
	u := &users{byID: map[int64]int{}, byEID: map[string]int{}, byEmail: map[string]int{}, byEmailInact: map[string]int{}}
	for rows.Next() {
		var (
			id, mgr                int64
			eid                    sql.NullString
			email, first, last     string
			dept, title, loc, cust string
			active                 bool
		)
		var sd, dd sql.NullInt32
		if err := rows.Scan(&id, &eid, &email, &first, &last, &mgr, &dept, &title, &loc, &sd, &dd, &cust, &active); err != nil {
			return nil, fmt.Errorf("diff: read users: %w", err)
		}
		i := len(u.id)
		u.id = append(u.id, id)
		u.eid = append(u.eid, eid.String)
		u.hasEID = append(u.hasEID, eid.Valid)
		u.email = append(u.email, email)
		u.first = append(u.first, first)
		u.last = append(u.last, last)
		u.manager = append(u.manager, mgr)
		u.deptKey = append(u.deptKey, dept)
		u.title = append(u.title, title)
		u.loc = append(u.loc, loc)
		u.start = append(u.start, sd.Int32)
		u.hasStart = append(u.hasStart, sd.Valid)
		u.deact = append(u.deact, dd.Int32)
		u.hasDeact = append(u.hasDeact, dd.Valid)
		u.custom = append(u.custom, canonicalJSON(cust))
		u.active = append(u.active, active)
		u.byID[id] = i
		if eid.Valid {
			u.byEID[eid.String] = i
		}
		if active {
			u.byEmail[email] = i
		} else {
			u.byEmailInact[email] = i // ordered by id: the latest wins
		}
	}
	return u, rows.Err()
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

func loadDepartments(ctx context.Context, db *sqlx.DB, tenant string) (*departments, error) {
	rows, err := db.QueryContext(ctx, `SELECT d.id, d.name, d.name_key, COALESCE(d.parent_id, 0), d.active,
		(SELECT count(*) FROM users u WHERE u.department_id = d.id AND u.active)
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
		var n int
		if err := rows.Scan(&id, &name, &key, &parent, &active, &n); err != nil {
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
		d.activeUsers[id] = n
	}
	return d, rows.Err()
}
