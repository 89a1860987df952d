package apply

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// planCols reads one plan record by the columns of schemas.PlanUsers.
type planCols struct {
	row          *array.Int32
	action       *array.String
	userID       *array.Int64
	eid, email   *array.String
	first, last  *array.String
	mgrID        *array.Int64
	mgrRow       *array.Int32
	dept         *array.String
	title, loc   *array.String
	start, deact *array.Date32
	custom       *array.String
	active       *array.Boolean
	effective    *array.Date32
	digest       *array.FixedSizeBinary
}

func colsOf(r arrow.Record) planCols {
	return planCols{
		row: r.Column(0).(*array.Int32), action: r.Column(1).(*array.String), userID: r.Column(2).(*array.Int64),
		eid: r.Column(3).(*array.String), email: r.Column(4).(*array.String), first: r.Column(5).(*array.String),
		last: r.Column(6).(*array.String), mgrID: r.Column(7).(*array.Int64), mgrRow: r.Column(8).(*array.Int32),
		dept: r.Column(9).(*array.String), title: r.Column(10).(*array.String), loc: r.Column(11).(*array.String),
		start: r.Column(12).(*array.Date32), deact: r.Column(13).(*array.Date32), custom: r.Column(14).(*array.String),
		active: r.Column(15).(*array.Boolean), effective: r.Column(16).(*array.Date32),
		digest: r.Column(17).(*array.FixedSizeBinary),
	}
}

// users applies the user actions.
//
// New users are the bulk of a first load, so they take the short way: their
// ids are reserved from the sequence in one query, managers new in the same
// file and departments are resolved here, and the rows are COPYed straight
// into users, which records their creation (see copyCreates). Changes to
// existing users go through a temporary table and UPDATE … FROM, their
// history computed in SQL from the state before the change.
func (a *applier) users(ctx context.Context) error {
	if a.kept != nil && len(a.kept.drop) > 0 {
		// Rows a speculation sent that the plan has otherwise or not at
		// all: gone before the plan's own go in (with the same ids).
		if err := a.exec(ctx, "drop speculated rows", `DELETE FROM `+pq.QuoteIdentifier(a.into)+` WHERE tenant_id = $1 AND id = ANY($2::bigint[])`,
			a.run.Tenant.ID, pq.Int64Array(a.kept.drop)); err != nil {
			return err
		}
	}
	if len(a.f.Plan.Users) == 0 {
		return nil
	}
	deptID, err := a.departmentIndex(ctx)
	if err != nil {
		return err
	}
	creates, updates, maxRow := a.size.creates, a.size.updates, a.size.maxRow
	// Ids for the new users, by source row (0: not a new user). A slice,
	// not a map: source rows are line numbers, at most the file's lines.
	var newID []int64
	if creates > 0 {
		// A speculation reserved the ids of the rows it sent; the others
		// get theirs here.
		newID = make([]int64, maxRow+1)
		need := creates
		if a.kept != nil {
			copy(newID, a.kept.newID)
			need = 0
			for _, r := range a.f.Plan.Users {
				c := colsOf(r)
				for i := 0; i < int(r.NumRows()); i++ {
					if c.action.Value(i) == schemas.ActCreate && newID[c.row.Value(i)] == 0 {
						need++
					}
				}
			}
		}
		var ids []int64
		if need > 0 {
			var err error
			if ids, err = a.reserveUserIDs(ctx, need); err != nil {
				return err
			}
		}
		k := 0
		for _, r := range a.f.Plan.Users {
			c := colsOf(r)
			for i := 0; i < int(r.NumRows()); i++ {
				if c.action.Value(i) == schemas.ActCreate && newID[c.row.Value(i)] == 0 {
					newID[c.row.Value(i)] = ids[k]
					k++
				}
			}
		}
	}
	w := rowWriter{newID: newID, deptID: deptID}
	// Updates go first: a new user may take the e-mail of one this file
	// deactivates or renames, and active e-mails are unique as rows are
	// written.
	if updates > 0 {
		if err := a.updates(ctx, w); err != nil {
			return err
		}
	}
	if creates > 0 {
		started := time.Now()
		sent := creates
		if a.kept != nil {
			sent -= a.kept.n // the speculation's rows that stay
		}
		if sent > 0 {
			if err := a.copyCreates(ctx, w); err != nil {
				return err
			}
		}
		if a.run.Log != nil {
			a.run.Log.Debug("apply step", "file", a.f.Name, "step", "copy creates", "rows", sent, "ms", time.Since(started).Milliseconds())
		}
	}
	return nil
}

// planSize is how many new users a plan has, the highest source row among
// them, and how many changes to existing users.
type planSize struct {
	creates, updates int
	maxRow           int32
}

func sizeOf(p *pipeline.Plan) planSize {
	var z planSize
	for _, r := range p.Users {
		c := colsOf(r)
		for i := 0; i < c.action.Len(); i++ {
			if c.action.Value(i) == schemas.ActCreate {
				z.creates++
				z.maxRow = max(z.maxRow, c.row.Value(i))
			} else {
				z.updates++
			}
		}
	}
	return z
}

// reserveUserIDs reserves n new users' ids from users_id_seq (not undone
// by a rollback: a file that fails leaves a gap, never a reused id). Each
// value the sequence hands out stands for a block of as many ids as its
// increment (migration 0006), read from the catalog in the same query so
// that a block never overlaps the next value whatever the increment is.
func (a *applier) reserveUserIDs(ctx context.Context, n int) ([]int64, error) {
	// The sequence by its name, a constant: pg_get_serial_sequence() in
	// this select is evaluated once per row. One array, not a row per
	// block through database/sql.
	var res struct {
		Inc    int64         `db:"inc"`
		Starts pq.Int64Array `db:"starts"`
	}
	if err := a.tx.GetContext(ctx, &res, `SELECT s.seqincrement AS inc,
			(SELECT array_agg(nextval('users_id_seq'::regclass)) FROM generate_series(1, ($1 + s.seqincrement - 1) / s.seqincrement)) AS starts
		FROM pg_sequence s WHERE s.seqrelid = 'users_id_seq'::regclass`, n); err != nil {
		return nil, fmt.Errorf("apply: reserve user ids: %w", err)
	}
	inc := res.Inc
	if inc < 1 {
		return nil, fmt.Errorf("apply: reserve user ids: users_id_seq counts by %d; it must count up", inc)
	}
	if blocks := (int64(n) + inc - 1) / inc; int64(len(res.Starts)) != blocks {
		return nil, fmt.Errorf("apply: reserve user ids: %d of %d blocks", len(res.Starts), blocks)
	}
	ids := make([]int64, 0, n)
	for _, s := range res.Starts {
		for j := int64(0); j < inc && len(ids) < n; j++ {
			ids = append(ids, s+j)
		}
	}
	return ids, nil
}

// rowWriter resolves a plan row's references to ids as they are written.
type rowWriter struct {
	newID  []int64          // new users' ids by source row
	deptID map[string]int64 // department ids by key
}

// manager is the row's manager: a user new in the same file (by row), or
// an existing one.
func (w rowWriter) manager(c planCols, i int) (int64, bool) {
	if !c.mgrRow.IsNull(i) {
		if m := c.mgrRow.Value(i); int(m) < len(w.newID) && w.newID[m] != 0 {
			return w.newID[m], true
		}
	}
	return c.mgrID.Value(i), !c.mgrID.IsNull(i)
}

// department is the row's department id.
func (w rowWriter) department(c planCols, i int) (int64, bool) {
	if c.dept.IsNull(i) {
		return 0, false
	}
	id, ok := w.deptID[c.dept.Value(i)]
	return id, ok
}

// userFields names, in order, the user columns fields writes.
var userFields = []string{"employee_id", "email", "first_name", "last_name", "manager_id", "department_id", "title", "location",
	"start_date", "deactivation_date", "custom", "active", "row_digest"}

// fields appends plan row i's user values, in userFields' order: the part
// of a new user's row and of an update's plan row that is the same. Without
// custom, the custom column is left out (see copyCreates).
func (w rowWriter) fields(l *pipeline.CopyLine, c planCols, i int, custom bool) {
	l.OptText(c.eid.Value(i), c.eid.IsValid(i))
	l.Text(c.email.Value(i))
	l.Text(c.first.Value(i))
	l.Text(c.last.Value(i))
	l.OptInt(w.manager(c, i))
	l.OptInt(w.department(c, i))
	l.Text(c.title.Value(i))
	l.Text(c.loc.Value(i))
	l.OptDate(int32(c.start.Value(i)), c.start.IsValid(i))
	l.OptDate(int32(c.deact.Value(i)), c.deact.IsValid(i))
	if custom {
		l.Text(c.custom.Value(i))
	}
	l.Bool(c.active.Value(i))
	l.OptBytea(c.digest.Value(i), c.digest.IsValid(i))
}

// updates writes the changes to existing users through a temporary table.
func (a *applier) updates(ctx context.Context, w rowWriter) error {
	t, run := a.run.Tenant.ID, a.run.ID
	if err := a.exec(ctx, "create plan_users", `CREATE TEMP TABLE plan_users (row integer, action text, user_id bigint,
		employee_id text, email text, first_name text, last_name text, manager_id bigint, department_id bigint,
		title text, location text, start_date date, deactivation_date date, custom jsonb, active boolean, row_digest bytea,
		effective_date date) ON COMMIT DROP`); err != nil {
		return err
	}
	cols := append(append([]string{"row", "action", "user_id"}, userFields...), "effective_date")
	_, err := pipeline.CopyRows(ctx, a.conn, "plan_users", cols, func(l *pipeline.CopyLine) error {
		for _, r := range a.f.Plan.Users {
			c := colsOf(r)
			for i := 0; i < int(r.NumRows()); i++ {
				if c.action.Value(i) == schemas.ActCreate {
					continue
				}
				l.Int(int64(c.row.Value(i)))
				l.Text(c.action.Value(i))
				l.Int(c.userID.Value(i))
				w.fields(l, c, i, true)
				l.OptDate(int32(c.effective.Value(i)), c.effective.IsValid(i))
				if err := l.End(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply: copy updates: %w", err)
	}
	var fileID any
	if a.f.ID > 0 {
		fileID = a.f.ID
	}
	steps := []struct{ what, q string }{
		{"history", `INSERT INTO user_history (tenant_id, run_id, file_id, user_id, action, effective_date, changes)
			SELECT $1, $2, $3, p.user_id, p.action, p.effective_date, ` + historyChanges() + `
			FROM plan_users p JOIN users u ON u.tenant_id = $1 AND u.id = p.user_id
			LEFT JOIN departments od ON od.id = u.department_id LEFT JOIN departments nd ON nd.id = p.department_id`},
		// Two users may swap e-mails in one file; the unique index on
		// active e-mails is checked row by row, so e-mails that change are
		// first moved out of the way, after history read them, (to a value no address can have).
		{"free changing e-mails", `UPDATE users u SET email = '#' || u.id || '#' || u.email
			FROM plan_users p WHERE u.id = p.user_id AND u.tenant_id = $1 AND u.active AND p.email <> u.email`},
		{"updates", `UPDATE users u SET employee_id = p.employee_id, email = p.email, first_name = p.first_name,
				last_name = p.last_name, manager_id = p.manager_id, department_id = p.department_id, title = p.title,
				location = p.location, start_date = p.start_date, deactivation_date = p.deactivation_date,
				custom = p.custom, active = p.active, row_digest = p.row_digest, last_run_id = $2, updated_at = now()
			FROM plan_users p WHERE u.id = p.user_id AND u.tenant_id = $1`},
	}
	for _, s := range steps {
		if err := a.exec(ctx, s.what, s.q, params(s.q, t, run, fileID)...); err != nil {
			return err
		}
	}
	return nil
}

// digests stores the row digests of users the file leaves as they are
// (see schemas.PlanDigests): the first file after migration 0007 gives
// every user one, later files only the users whose rows say the same in
// other words. Only the column is written: no history, no last_run_id.
func (a *applier) digests(ctx context.Context) error {
	r := a.f.Plan.Digests
	if r == nil || r.NumRows() == 0 {
		return nil
	}
	ids, dg := r.Column(0).(*array.Int64), r.Column(1).(*array.FixedSizeBinary)
	idArr, dgArr := make(pq.Int64Array, r.NumRows()), make(pq.ByteaArray, r.NumRows())
	for i := range idArr {
		idArr[i] = ids.Value(i)
		if dg.IsValid(i) {
			dgArr[i] = dg.Value(i)
		}
	}
	// pq.ByteaArray sends a nil element as an empty bytea, not NULL.
	return a.exec(ctx, "row digests", `UPDATE users u SET row_digest = NULLIF(v.row_digest, ''::bytea)
		FROM unnest($2::bigint[], $3::bytea[]) AS v(id, row_digest)
		WHERE u.id = v.id AND u.tenant_id = $1`, a.run.Tenant.ID, idArr, dgArr)
}

// departmentIndex maps the tenant's department keys to ids, read
// once the file's departments exist.
func (a *applier) departmentIndex(ctx context.Context) (map[string]int64, error) {
	rows, err := a.tx.QueryContext(ctx, `SELECT id, name_key FROM departments WHERE tenant_id = $1`, a.run.Tenant.ID)
	if err != nil {
		return nil, fmt.Errorf("apply: read departments: %w", err)
	}
	defer rows.Close()
	ids := map[string]int64{}
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			return nil, fmt.Errorf("apply: read departments: %w", err)
		}
		ids[key] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("apply: read departments: %w", err)
	}
	return ids, nil
}

// newUsersHaveCustom reports whether any new user of the plan has custom
// fields (a value other than '{}').
func (a *applier) newUsersHaveCustom() bool {
	for _, r := range a.f.Plan.Users {
		c := colsOf(r)
		for i := 0; i < int(r.NumRows()); i++ {
			if c.action.Value(i) == schemas.ActCreate && c.custom.Value(i) != "{}" {
				return true
			}
		}
	}
	return false
}

// copyCreates COPYs the new users into users. Their creation is recorded
// on the row itself (created_run_id, created_file_id), not in
// user_history: the state a user was created with is what later changes
// record as "old" (roster_user_initial in the schema), so a row per new
// user there would repeat it at twice the cost of the users themselves.
//
// When no new user has custom fields, the custom column is left to its
// default ('{}'): the server parsing a million '{}' as jsonb was ~0.5 s
// of the COPY (psql \copy of 1M users: 7.3-7.5 s with the column, 6.0-7.0
// s without, same machine, alternating).
//
// A speculation (speculate.go) already COPYed most of a first load's new
// users: the rows it sent as the plan has them (kept) are left out, and it
// decided whether the custom column goes in.
func (a *applier) copyCreates(ctx context.Context, w rowWriter) error {
	custom := a.newUsersHaveCustom()
	if a.kept != nil {
		custom = a.kept.custom
	}
	_, err := pipeline.CopyRows(ctx, a.conn, a.into, createCols(custom), func(l *pipeline.CopyLine) error {
		for _, r := range a.f.Plan.Users {
			c := colsOf(r)
			for i := 0; i < int(r.NumRows()); i++ {
				if c.action.Value(i) != schemas.ActCreate {
					continue
				}
				if a.kept != nil && a.kept.has(c.row.Value(i)) {
					continue
				}
				w.create(l, c, i, custom, a.run, a.f)
				if err := l.End(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply: copy new users: %w", err)
	}
	return nil
}

// createCols are the users columns a new user's row is COPYed into, in
// create's order; without custom the column takes its default ('{}').
func createCols(custom bool) []string {
	fields := userFields
	if !custom {
		fields = slices.DeleteFunc(slices.Clone(userFields), func(f string) bool { return f == "custom" })
	}
	return append(append([]string{"id", "tenant_id"}, fields...), "last_run_id", "created_run_id", "created_file_id")
}

// create appends plan row i, a new user, as its users row (createCols),
// without ending the line.
func (w rowWriter) create(l *pipeline.CopyLine, c planCols, i int, custom bool, run *pipeline.Run, f *pipeline.File) {
	l.Int(w.newID[c.row.Value(i)])
	l.Text(run.Tenant.ID)
	w.fields(l, c, i, custom)
	l.Int(run.ID)
	l.Int(run.ID)
	l.OptInt(f.ID, f.ID > 0)
}
