package export

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/schemas"
)

// day is a date as days since 1970-01-01 (Arrow's date32).
type day int32

func toDay(t time.Time) day { return day(t.Unix() / 86400) }

func parseDay(s string) (day, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, err
	}
	return toDay(t), nil
}

// nday parses an optional date; a value that is not a date is treated as
// none (history holds what apply wrote, always ISO dates).
func nday(s sql.NullString) *day {
	if !s.Valid {
		return nil
	}
	d, err := parseDay(s.String)
	if err != nil {
		return nil
	}
	return &d
}

func nstr(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

func nint(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	return &v.Int64
}

// source reads the tenant's history as of one date inside a repeatable
// read transaction, so every table of an export sees the same data.
type source struct {
	tx     *sqlx.Tx
	tenant string
	ds     string // the date, YYYY-MM-DD
}

// prepareSQL builds, for the transaction only, three working tables:
//
//   - exp_touched: the users the runs of logical date D created or changed;
//   - exp_users: every user as of the date — created by a run of logical
//     date <= D, with the replay of every change recorded by runs of
//     logical date <= D, in recording order — and, for touched users, the
//     state they were created with (init);
//   - exp_day: every creation and change recorded by runs of logical date D,
//     with the user's state after it (the same replay, up to that change),
//     the state before it, and the next change's effective date.
//
// The replay needs no per-row function: changes map each field to
// {"old", "new"} (apply strips a null "new"), so concatenating the changes
// objects in recording order (roster_merge, jsonb || as an aggregate) leaves
// each field's last change, whose "new" is the field's value. A creation
// has no user_history row: the state a user was created with is, field by
// field, the "old" of the field's first recorded change, else the current
// value (the schema's roster_user_initial; done here set-based).
var prepareSQL = []string{
	// Sorting the history of a large tenant in memory, not on disk; no JIT,
	// whose compilation costs more than these queries (the recursive
	// manager tree is estimated far too large).
	`SET LOCAL work_mem = '64MB'`,
	`SET LOCAL jit = off`,
	// The users the date's runs created or changed. Their history is then
	// found by user_id alone (ids are global), which stays fast even before
	// PostgreSQL has statistics on a freshly loaded user_history.
	`CREATE TEMP TABLE exp_touched ON COMMIT DROP AS
	SELECT h.user_id FROM user_history h JOIN runs r ON r.id = h.run_id
	WHERE h.tenant_id = $1 AND r.logical_date = $2::date
	UNION
	SELECT u.id FROM users u JOIN runs r ON r.id = u.created_run_id
	WHERE u.tenant_id = $1 AND r.logical_date = $2::date`,
	`ALTER TABLE exp_touched ADD PRIMARY KEY (user_id)`,
	`ANALYZE exp_touched`,
	// Most users have no history: their state is their row, read as it is
	// (no jsonb built per user, which took 40 s for a million).
	`CREATE TEMP TABLE exp_users ON COMMIT DROP AS
	WITH f AS (
		SELECT h.user_id, roster_merge(roster_history_olds(h.changes) ORDER BY h.id DESC) AS olds
		FROM user_history h WHERE h.tenant_id = $1
		GROUP BY h.user_id),
	s AS (
		SELECT h.user_id, roster_merge(h.changes ORDER BY h.id) AS st, max(h.id) AS last_id
		FROM user_history h JOIN runs r ON r.id = h.run_id
		WHERE h.tenant_id = $1 AND r.logical_date <= $2::date
		GROUP BY h.user_id)
	SELECT u.id AS user_id, ` + asOfCols("s.st", "f.olds") + `,
		coalesce(lh.run_id, u.created_run_id) AS last_run_id, coalesce(lh.recorded_at, u.created_at) AS last_recorded_at,
		u.created_run_id, cr.logical_date AS created_on, u.created_at,
		-- A user the date's runs touched and whose replay has more than the
		-- creation needs that state as jsonb (init) for exp_day; one only
		-- created by them (all of a first load) is read from here as it is.
		CASE WHEN t.user_id IS NOT NULL AND s.user_id IS NOT NULL THEN ` + initState("f.olds") + ` END AS init,
		t.user_id IS NOT NULL AND s.user_id IS NULL AS created_only
	FROM users u JOIN runs cr ON cr.id = u.created_run_id
	LEFT JOIN departments d ON d.id = u.department_id
	LEFT JOIN f ON f.user_id = u.id LEFT JOIN s ON s.user_id = u.id
	LEFT JOIN user_history lh ON lh.id = s.last_id LEFT JOIN exp_touched t ON t.user_id = u.id
	WHERE u.tenant_id = $1 AND cr.logical_date <= $2::date`,
	`ALTER TABLE exp_users ADD PRIMARY KEY (user_id)`,
	`ANALYZE exp_users`,
	// A creation comes first in its user's replay (seq 0; history ids are
	// positive) and has no history id.
	`CREATE TEMP TABLE exp_day ON COMMIT DROP AS
	SELECT x.* FROM (
		SELECT w.*,
			lag(w.st) OVER p AS prev_st,
			lead(w.effective_date) OVER p AS next_eff,
			first_value(w.effective_date) OVER p AS first_seen
		FROM (
			SELECT c.*, roster_merge(c.changes) OVER (PARTITION BY c.user_id ORDER BY c.seq) AS st
			FROM (
				SELECT h.id, h.id AS seq, h.user_id, h.run_id, h.action, h.effective_date, h.recorded_at, r.logical_date, h.changes
				FROM exp_touched t JOIN user_history h ON h.user_id = t.user_id JOIN runs r ON r.id = h.run_id
				WHERE r.logical_date <= $1::date
				UNION ALL
				SELECT NULL::bigint, 0, u.user_id, u.created_run_id, 'create', u.created_on, u.created_at, u.created_on, u.init
				FROM exp_users u WHERE u.init IS NOT NULL
			) c
		) w
		WINDOW p AS (PARTITION BY w.user_id ORDER BY w.seq)
	) x
	WHERE x.logical_date = $1::date AND EXISTS (SELECT 1 FROM exp_users u WHERE u.user_id = x.user_id)`,
}

// stateField is a user field as history records it: its name in changes,
// the current value's expression (u: users, d: the user's department), and
// how a value is projected into a state column: from a jsonb value (json)
// or from the current one (cur); %s is the expression.
type stateField struct{ name, col, json, cur string }

var stateFields = []stateField{
	{"employee_id", "u.employee_id", `%s #>> '{}'`, `%s`},
	{"email", "u.email", `coalesce(%s #>> '{}', '')`, `%s`},
	{"first_name", "u.first_name", `coalesce(%s #>> '{}', '')`, `%s`},
	{"last_name", "u.last_name", `coalesce(%s #>> '{}', '')`, `%s`},
	{"manager_id", "u.manager_id", `(%s #>> '{}')::bigint`, `%s`},
	{"department", "d.name", `%s #>> '{}'`, `%s`},
	{"title", "u.title", `coalesce(%s #>> '{}', '')`, `%s`},
	{"location", "u.location", `coalesce(%s #>> '{}', '')`, `%s`},
	{"start_date", "u.start_date", `%s #>> '{}'`, `to_char(%s, 'YYYY-MM-DD')`},
	{"deactivation_date", "u.deactivation_date", `%s #>> '{}'`, `to_char(%s, 'YYYY-MM-DD')`},
	{"custom", "u.custom", `CASE WHEN jsonb_typeof(%[1]s) = 'object' THEN (%[1]s)::text ELSE '{}' END`, `%s::text`},
	{"active", "u.active", `coalesce((%s #>> '{}')::boolean, false)`, `%s`},
}

// The column names are the fields', but for department (by name).
const stateSelect = `employee_id, email, first_name, last_name, manager_id, department, title, location,
	start_date, deactivation_date, custom, active`

// newIn is the field's "new" value in the changes st, as its column.
func (f stateField) newIn(st string) string {
	return fmt.Sprintf(f.json, fmt.Sprintf("(%s -> '%s' -> 'new')", st, f.name))
}

// stateCols projects a replayed state (a jsonb object of field changes,
// each {"old", "new"}) into the user columns.
func stateCols(st string) string {
	var cols []string
	for _, f := range stateFields {
		cols = append(cols, f.newIn(st)+" AS "+f.name)
	}
	return strings.Join(cols, ", ")
}

// asOfCols projects a user as of a date into the user columns: a field
// the replayed changes (st) set has their last value, else the value it
// was created with — the first change's old value (olds, from
// roster_history_olds) — else the current one.
func asOfCols(st, olds string) string {
	var cols []string
	for _, f := range stateFields {
		cols = append(cols, fmt.Sprintf("CASE WHEN %[1]s ? '%[3]s' THEN %[4]s WHEN %[2]s ? '%[3]s' THEN %[5]s ELSE %[6]s END AS %[3]s",
			st, olds, f.name, f.newIn(st),
			fmt.Sprintf(f.json, fmt.Sprintf("(%s -> '%s')", olds, f.name)), fmt.Sprintf(f.cur, f.col)))
	}
	return strings.Join(cols, ",\n\t\t")
}

// setFields lists, sorted and comma-separated, the fields a user of
// exp_users (alias u) has a value for: what a creation set.
func setFields(u string) string {
	names := make([]string, len(stateFields))
	for i, f := range stateFields {
		names[i] = f.name
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("CASE WHEN %s.%s IS NOT NULL THEN '%s' END", u, n, n))
	}
	return "concat_ws(',', " + strings.Join(parts, ", ") + ")"
}

// initState is the state a user was created with, in the shape of
// history's changes ({"field": {"new": value}}, fields without a value
// left out, as roster_state gives it): the first change's old value of
// each field (olds), else the current value.
func initState(olds string) string {
	var parts []string
	for _, f := range stateFields {
		v := fmt.Sprintf("CASE WHEN %[1]s ? '%[2]s' THEN %[1]s -> '%[2]s' ELSE to_jsonb(%[3]s) END", olds, f.name, f.col)
		parts = append(parts, fmt.Sprintf("'%s', CASE WHEN jsonb_typeof(%[2]s) <> 'null' THEN jsonb_build_object('new', %[2]s) END", f.name, v))
	}
	return "jsonb_strip_nulls(jsonb_build_object(" + strings.Join(parts, ", ") + "))"
}

func (s *source) prepare(ctx context.Context) error {
	for _, q := range prepareSQL {
		var args []any
		switch {
		case strings.Contains(q, "$2"):
			args = []any{s.tenant, s.ds}
		case strings.Contains(q, "$1"):
			args = []any{s.ds}
		}
		if _, err := s.tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("export: read history: %w", err)
		}
	}
	return nil
}

// user is one user's attributes, with the manager's identity as of the
// export date.
type user struct {
	id                     int64
	eid                    *string
	email, first, last     string
	mgr                    *int64
	mgrEID, mgrEmail       *string
	dept                   *string
	title, loc             string
	start, deact           *day
	custom                 string
	active                 bool
	runID                  int64
	recorded               time.Time
	effDate, nextEff       *day // profile and events
	firstSeen, prevStart   *day
	action, changes        string
	fields                 string // changed fields, sorted, comma-separated
	historyID              *int64 // nil for a creation: no user_history row holds it
	oldMgrEID, oldMgrEmail *string
	newMgrEID, newMgrEmail *string
}

// scanner collects the destinations of one row.
type userScan struct {
	eid, dept, start, deact, mgrEID, mgrEmail sql.NullString
	mgr                                       sql.NullInt64
}

func (u *user) dests(sc *userScan) []any {
	return []any{&sc.eid, &u.email, &u.first, &u.last, &sc.mgr, &sc.dept, &u.title, &u.loc, &sc.start, &sc.deact,
		&u.custom, &u.active, &sc.mgrEID, &sc.mgrEmail}
}

func (u *user) settle(sc *userScan) {
	u.eid, u.dept, u.mgr = nstr(sc.eid), nstr(sc.dept), nint(sc.mgr)
	u.start, u.deact = nday(sc.start), nday(sc.deact)
	u.mgrEID, u.mgrEmail = nstr(sc.mgrEID), nstr(sc.mgrEmail)
}

// snapshot streams the users as of the date, in user_id order.
func (s *source) snapshot(ctx context.Context, each func(*user) error) error {
	rows, err := s.tx.QueryContext(ctx, `SELECT u.user_id, `+prefixed("u", stateSelect)+`, m.employee_id, m.email,
			u.last_run_id, u.last_recorded_at
		FROM exp_users u LEFT JOIN exp_users m ON m.user_id = u.manager_id
		ORDER BY u.user_id`)
	if err != nil {
		return fmt.Errorf("export: read snapshot: %w", err)
	}
	defer rows.Close()
	var u user
	var sc userScan
	dests := append([]any{&u.id}, u.dests(&sc)...)
	dests = append(dests, &u.runID, &u.recorded)
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("export: read snapshot: %w", err)
		}
		u.settle(&sc)
		if err := each(&u); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export: read snapshot: %w", err)
	}
	return nil
}

// changes streams the changes recorded by the date's runs, each with the
// user's state after it: by user then recording order (byUser), or in
// recording order.
func (s *source) changes(ctx context.Context, byUser bool, each func(*user) error) error {
	// Recording order: a run writes its updates' history before its new
	// users, and new users in file order (their ids).
	order := "d.run_id, d.action = 'create', d.seq, d.user_id"
	if byUser {
		order = "d.user_id, d.seq"
	}
	// Events of a create need only the state after it: its changes are
	// not sent.
	// Events of a create need only the state after it: its changes are
	// not sent. Users only created by the date's runs come from exp_users
	// (their state is as created; no later change, no previous state).
	rows, err := s.tx.QueryContext(ctx, `SELECT id, user_id, run_id, action, recorded_at, changes, fields, eff, next_eff, first_seen, prev_start,
			`+stateSelect+`, m_eid, m_email, mo_eid, mo_email, mn_eid, mn_email
		FROM (
			SELECT d.id, d.seq, d.user_id, d.run_id, d.action, d.recorded_at,
				CASE WHEN d.action = 'create' THEN '{}' ELSE d.changes::text END AS changes,
				(SELECT string_agg(k, ',' ORDER BY k COLLATE "C") FROM jsonb_object_keys(d.changes) k) AS fields,
				to_char(d.effective_date, 'YYYY-MM-DD') AS eff, to_char(d.next_eff, 'YYYY-MM-DD') AS next_eff,
				to_char(d.first_seen, 'YYYY-MM-DD') AS first_seen, d.prev_st -> 'start_date' ->> 'new' AS prev_start,
				`+stateCols("d.st")+`, m.employee_id AS m_eid, m.email AS m_email,
				mo.employee_id AS mo_eid, mo.email AS mo_email, mn.employee_id AS mn_eid, mn.email AS mn_email
			FROM exp_day d
			LEFT JOIN exp_users m ON m.user_id = (d.st -> 'manager_id' ->> 'new')::bigint
			LEFT JOIN exp_users mo ON mo.user_id = (d.changes -> 'manager_id' ->> 'old')::bigint
			LEFT JOIN exp_users mn ON mn.user_id = (d.changes -> 'manager_id' ->> 'new')::bigint
			UNION ALL
			SELECT NULL, 0, u.user_id, u.created_run_id, 'create', u.created_at, '{}', `+setFields("u")+`,
				to_char(u.created_on, 'YYYY-MM-DD'), NULL, to_char(u.created_on, 'YYYY-MM-DD'), NULL,
				`+prefixed("u", stateSelect)+`, m.employee_id, m.email, NULL, NULL, m.employee_id, m.email
			FROM exp_users u LEFT JOIN exp_users m ON m.user_id = u.manager_id
			WHERE u.created_only
		) d
		ORDER BY `+order)
	if err != nil {
		return fmt.Errorf("export: read changes: %w", err)
	}
	defer rows.Close()
	var u user
	var sc userScan
	var fields, eff, next, first, prevStart, oe, oem, ne, nem sql.NullString
	var hid sql.NullInt64
	dests := []any{&hid, &u.id, &u.runID, &u.action, &u.recorded, &u.changes, &fields, &eff, &next, &first, &prevStart}
	dests = append(dests, u.dests(&sc)...)
	dests = append(dests, &oe, &oem, &ne, &nem)
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("export: read changes: %w", err)
		}
		u.settle(&sc)
		u.historyID = nint(hid)
		u.fields = fields.String
		u.effDate, u.nextEff, u.firstSeen, u.prevStart = nday(eff), nday(next), nday(first), nday(prevStart)
		u.oldMgrEID, u.oldMgrEmail, u.newMgrEID, u.newMgrEmail = nstr(oe), nstr(oem), nstr(ne), nstr(nem)
		if u.effDate == nil {
			return fmt.Errorf("export: %s of user %d by run %d has no effective date", u.action, u.id, u.runID)
		}
		if err := each(&u); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export: read changes: %w", err)
	}
	return nil
}

func prefixed(alias, cols string) string {
	var out []string
	for _, c := range strings.Split(cols, ",") {
		out = append(out, alias+"."+strings.TrimSpace(c))
	}
	return strings.Join(out, ", ")
}

// dept is a department as of the export date.
type dept struct {
	id        int64
	name, key string
	parent    *int64
	active    bool
	exists    bool
	runID     *int64
	recorded  time.Time
	level     int32
	path      string
	head      *user
	headcount int64
}

// departments rebuilds the department tree as of the date from
// department_history (the same rule as users: changes recorded by runs of
// logical date <= D), with each department's path, level, head and active
// headcount. History does not record a new department's parent or
// activity, so the state before a department's first recorded change of a
// field is that change's old value, or the current value when none was
// ever recorded.
func (s *source) departments(ctx context.Context) ([]*dept, map[string]*dept, error) {
	var rows []struct {
		ID      int64         `db:"id"`
		Name    string        `db:"name"`
		Key     string        `db:"name_key"`
		Parent  sql.NullInt64 `db:"parent_id"`
		Active  bool          `db:"active"`
		Created time.Time     `db:"created_at"`
	}
	if err := s.tx.SelectContext(ctx, &rows, `SELECT id, name, name_key, parent_id, active, created_at
		FROM departments WHERE tenant_id = $1 ORDER BY id`, s.tenant); err != nil {
		return nil, nil, fmt.Errorf("export: read departments: %w", err)
	}
	var hist []struct {
		ID       int64     `db:"id"`
		Dept     int64     `db:"department_id"`
		Action   string    `db:"action"`
		Changes  string    `db:"changes"`
		RunID    int64     `db:"run_id"`
		Logical  string    `db:"logical_date"`
		Recorded time.Time `db:"recorded_at"`
	}
	if err := s.tx.SelectContext(ctx, &hist, `SELECT h.id, h.department_id, h.action, h.changes::text AS changes, h.run_id,
			to_char(r.logical_date, 'YYYY-MM-DD') AS logical_date, h.recorded_at
		FROM department_history h JOIN runs r ON r.id = h.run_id
		WHERE h.tenant_id = $1 ORDER BY h.id`, s.tenant); err != nil {
		return nil, nil, fmt.Errorf("export: read department history: %w", err)
	}
	byID := map[int64]*dept{}
	byKey := map[string]*dept{}
	var list []*dept
	for _, r := range rows {
		d := &dept{id: r.ID, name: r.Name, key: r.Key, active: r.Active, exists: true, recorded: r.Created}
		if r.Parent.Valid {
			p := r.Parent.Int64
			d.parent = &p
		}
		byID[d.id], byKey[d.key] = d, d
		list = append(list, d)
	}
	parentOf := func(v json.RawMessage) *int64 {
		k := jstr(v)
		if k == nil {
			return nil
		}
		if p, ok := byKey[schemas.Key(*k)]; ok {
			return &p.id
		}
		return nil
	}
	type change struct {
		Old json.RawMessage `json:"old"`
		New json.RawMessage `json:"new"`
	}
	parsed := make([]map[string]change, len(hist))
	created := map[int64]bool{} // departments with a create row at all
	seenParent, seenActive := map[int64]bool{}, map[int64]bool{}
	for i, h := range hist {
		if err := json.Unmarshal([]byte(h.Changes), &parsed[i]); err != nil {
			return nil, nil, fmt.Errorf("export: department history %d: %w", h.ID, err)
		}
		d := byID[h.Dept]
		if d == nil {
			continue
		}
		if h.Action == "create" {
			created[d.id] = true
		}
		// The state at creation: the old value of the first recorded change.
		if c, ok := parsed[i]["parent"]; ok && !seenParent[d.id] {
			seenParent[d.id] = true
			d.parent = parentOf(c.Old)
		}
		if c, ok := parsed[i]["active"]; ok && !seenActive[d.id] {
			seenActive[d.id] = true
			if b := jbool(c.Old); b != nil {
				d.active = *b
			}
		}
	}
	for _, d := range list {
		// A department with a create row exists from that run's date; one
		// roster holds no creation for always existed.
		d.exists = !created[d.id]
	}
	for i, h := range hist {
		d := byID[h.Dept]
		if d == nil || h.Logical > s.ds {
			continue
		}
		if h.Action == "create" {
			d.exists = true
		}
		if c, ok := parsed[i]["parent"]; ok {
			d.parent = parentOf(c.New)
		}
		if c, ok := parsed[i]["active"]; ok {
			if b := jbool(c.New); b != nil {
				d.active = *b
			}
		}
		run := h.RunID
		d.runID, d.recorded = &run, h.Recorded
	}
	var out []*dept
	for _, d := range list {
		if d.exists {
			out = append(out, d)
		}
	}
	for _, d := range out {
		if d.parent != nil && (byID[*d.parent] == nil || !byID[*d.parent].exists) {
			d.parent = nil
		}
	}
	// Paths and levels; a loop (which diff refuses) is cut where it closes.
	for _, d := range out {
		names := []string{d.name}
		seen := map[int64]bool{d.id: true}
		for p := d.parent; p != nil && !seen[*p]; p = byID[*p].parent {
			seen[*p] = true
			names = append(names, byID[*p].name)
		}
		for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
			names[i], names[j] = names[j], names[i]
		}
		d.level = int32(len(names))
		d.path = strings.Join(names, PathSeparator)
	}
	byName := map[string]*dept{}
	for _, d := range out {
		byName[d.name] = d
	}
	if err := s.heads(ctx, byName); err != nil {
		return nil, nil, err
	}
	return out, byName, nil
}

// lookup finds the department a user's history names (names are stored as
// the department's spelling; keys match case-insensitively).
func lookup(byName map[string]*dept, name *string) *dept {
	if name == nil {
		return nil
	}
	if d, ok := byName[*name]; ok {
		return d
	}
	k := schemas.Key(*name)
	for _, d := range byName {
		if d.key == k {
			return d
		}
	}
	return nil
}

// heads finds each department's head and active headcount as of the date.
// The head is the most senior active member: members whose manager is not
// an active member of the same department first; then the fewest managers
// above them in the whole tree; then the earliest start date; then the
// smallest user_id.
func (s *source) heads(ctx context.Context, byName map[string]*dept) error {
	rows, err := s.tx.QueryContext(ctx, headsSQL)
	if err != nil {
		return fmt.Errorf("export: department heads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var eid sql.NullString
		h := &user{}
		var n int64
		if err := rows.Scan(&name, &n, &h.id, &eid, &h.email, &h.first, &h.last); err != nil {
			return fmt.Errorf("export: department heads: %w", err)
		}
		h.eid = nstr(eid)
		if d := lookup(byName, &name); d != nil {
			d.head, d.headcount = h, n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export: department heads: %w", err)
	}
	return nil
}

const headsSQL = `WITH RECURSIVE tree(user_id, depth) AS (
			SELECT u.user_id, 0 FROM exp_users u
			WHERE u.manager_id IS NULL OR NOT EXISTS (SELECT 1 FROM exp_users m WHERE m.user_id = u.manager_id)
			UNION ALL
			SELECT c.user_id, t.depth + 1 FROM exp_users c JOIN tree t ON c.manager_id = t.user_id
		), members AS (
			SELECT u.*, count(*) OVER (PARTITION BY u.department) AS headcount,
				row_number() OVER (PARTITION BY u.department ORDER BY
					(m.active IS TRUE AND m.department = u.department), t.depth NULLS LAST,
					u.start_date::date NULLS LAST, u.user_id) AS rank
			FROM exp_users u
			LEFT JOIN exp_users m ON m.user_id = u.manager_id
			LEFT JOIN tree t ON t.user_id = u.user_id
			WHERE u.active AND u.department IS NOT NULL)
		SELECT department, headcount, user_id, employee_id, email, first_name, last_name FROM members WHERE rank = 1`

// jstr reads a JSON value as text: a string as itself, null or absent as
// nil, anything else (numbers, booleans) as its JSON text.
func jstr(v json.RawMessage) *string {
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return &s
	}
	t := string(v)
	return &t
}

func jbool(v json.RawMessage) *bool {
	var b bool
	if len(v) == 0 || json.Unmarshal(v, &b) != nil {
		return nil
	}
	return &b
}
