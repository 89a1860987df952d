// Package apply carries out diff's plan in PostgreSQL: departments, then
// users, then their history and the file's ledger entry, in one
// transaction, so a file is either fully applied and recorded or not at
// all. It is set-based: the plan goes in with COPY into temporary tables,
// and a handful of INSERT … SELECT / UPDATE … FROM statements do the rest,
// never one round trip per row.
package apply

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "apply",
		Summary: "Applies the plan in one transaction per file: departments, then users, then user_history and the ledger entry. Does nothing in a dry run.",
		Ordered: true,
		Fields: []pipeline.Field{
			{Name: OptSpeculate, Default: false, Help: "start a first load's COPY of new users beside diff, for a tenant that has no users yet " +
				"(see stages/apply/speculate.go): the rows diff will surely create go in while diff still decides, and apply then checks " +
				"every one of them against diff's plan, deleting and re-sending any it decided otherwise. It holds a second database " +
				"connection for the file meanwhile. Only in a run of one file, never in a dry run. Off by default: where roster and the " +
				"server share two cores, the COPY slows by about what diff's time saves, and beside a bulk load (bulk_min_rows) diff " +
				"starves the COPY of rows and the first load is slower (README: Performance). Try it where PostgreSQL has cores of its own"},
			{Name: OptSpeculateMinRows, Default: 10000, Help: "the smallest file, in rows, worth a speculation: below it the COPY is short, " +
				"and the second connection and transaction cost more than the overlap saves"},
			{Name: OptBulkMinRows, Default: 50000, Help: "the smallest first load, in new users, that goes into a partition of the tenant's own " +
				"(stages/apply/bulk.go): the rows are COPYed into a bare table and its indexes built afterwards, ~30% less of the " +
				"server's time than inserting into users' indexes, and the tenant's indexes stay its own. The attach locks the other " +
				"tenants' partition (users_default) from then until the commit, after waiting for the transactions using it, and scans " +
				"it once; bulk loads run one at a time. The database role must be a member of users' owner and may create tables in " +
				"its current schema, else files load into users as usual. Each such tenant is a table and five indexes more, so keep it " +
				"well above a typical tenant's size; 0 never does it"},
			{Name: OptBulkAttachWaitMS, Default: 10000, Help: "how long, in milliseconds, a bulk load keeps trying to attach its table: " +
				"each try waits a second at most for its lock on users_default, because the other tenants' reads and writes of users " +
				"queue behind it meanwhile, then steps aside for a second (a long transaction on users_default, such as an export's, holds " +
				"it off). Past this the rows go into users_default by INSERT … SELECT: the file applies, only slower"},
		},
		New: func(o pipeline.Options) (any, error) {
			return stage{speculate: o.Bool(OptSpeculate), speculateMinRows: o.Int(OptSpeculateMinRows), bulkMinRows: o.Int(OptBulkMinRows),
				attachWait: time.Duration(o.Int(OptBulkAttachWaitMS)) * time.Millisecond}, nil
		},
	}
}

// The stage's options.
const (
	OptSpeculate        = "speculate"
	OptSpeculateMinRows = "speculate_min_rows"
	OptBulkMinRows      = "bulk_min_rows"
	OptBulkAttachWaitMS = "bulk_attach_wait_ms"
)

type stage struct {
	speculate        bool
	speculateMinRows int
	bulkMinRows      int
	attachWait       time.Duration
}

// bulks reports whether a first load of n new users goes into a partition
// of the tenant's own.
func (st stage) bulks(n int) bool { return st.bulkMinRows > 0 && n >= st.bulkMinRows }

func (st stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	if f.Plan == nil {
		return pipeline.Stats{}, fmt.Errorf("apply: %s has no plan (is diff in the pipeline?)", f.Name)
	}
	var in int64
	for _, r := range append(append([]arrow.Record(nil), f.Plan.Departments...), f.Plan.Users...) {
		in += r.NumRows()
	}
	if run.DryRun {
		f.Status = pipeline.StatusPlanned
		return pipeline.Stats{RowsIn: in}, nil
	}
	// The transaction on a connection of its own, which copyCreates also
	// uses directly (pipeline.CopyRows) for the bulk of a first load: one
	// of TxConn's, whose COPY is binary, when there are rows to COPY; else
	// one of lib/pq's pool, already open (TxConn's first connection was
	// ~5 ms of an unchanged 100k-row file's run).
	var conn *sqlx.Conn
	var tx *sqlx.Tx
	var keep *kept
	into := "users" // the table new users go into
	if h := f.Speculated(Spec().Name); h != nil {
		// Started beside diff (speculate.go): carried on with when it
		// agrees with the plan, else undone.
		s := h.(*speculation)
		defer s.Close()
		checking := time.Now()
		var why string
		if keep, why = s.check(f.Plan); keep != nil {
			conn, tx, into = s.conn, s.tx, s.into
			if run.Log != nil {
				run.Log.Debug("apply: speculation kept", "file", f.Name, "sent", s.rows, "kept", keep.n, "resent", keep.resend, "dropped", len(keep.drop),
					"copy_ms", s.copyMS, "waited_ms", time.Since(checking).Milliseconds())
			}
		} else {
			s.Close()
			if run.Log != nil {
				run.Log.Debug("apply: speculation undone", "file", f.Name, "why", why)
			}
		}
	}
	if conn == nil {
		connect := pipeline.TxConn
		if in == 0 {
			connect = func(ctx context.Context, db *sqlx.DB) (*sqlx.Conn, error) { return db.Connx(ctx) }
		}
		var err error
		if conn, err = connect(ctx, run.DB); err != nil {
			return pipeline.Stats{}, fmt.Errorf("apply: connect: %w", err)
		}
		if tx, err = conn.BeginTxx(ctx, nil); err != nil {
			conn.Close()
			return pipeline.Stats{}, fmt.Errorf("apply: begin: %w", err)
		}
	}
	defer conn.Close()
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	size := sizeOf(f.Plan)
	// On a transaction of its own (a kept speculation chose already), the
	// first statement, before anything reads users (bulk.go).
	if keep == nil && f.Kind == schemas.KindUsers && size.updates == 0 && st.bulks(size.creates) {
		table, why, err := startBulk(ctx, tx, run.Tenant.ID)
		if err != nil {
			return pipeline.Stats{}, err
		}
		if table != "" {
			into = table
		} else if run.Log != nil {
			run.Log.Debug("apply: no bulk load", "file", f.Name, "why", why)
		}
	}
	a := applier{tx: tx, conn: conn.Conn, run: run, f: f, kept: keep, size: size, into: into, attachWait: st.attachWait}
	if err := a.departments(ctx); err != nil {
		return pipeline.Stats{}, err
	}
	if run.BeforeUsers != nil && f.Kind == schemas.KindUsers {
		if err := run.BeforeUsers(ctx, tx); err != nil {
			return pipeline.Stats{}, fmt.Errorf("apply: %w", err)
		}
	}
	if err := a.users(ctx); err != nil {
		return pipeline.Stats{}, err
	}
	// The received copy must be durable before the ledger says the file
	// was applied: a backfill replays it from there (fetch keeps it in the
	// background, long done by now on any file worth the wait). Before a
	// bulk load's attach, whose lock the other tenants wait on.
	if err := f.Kept(); err != nil {
		return pipeline.Stats{}, fmt.Errorf("apply: %w", err)
	}
	if a.into != "users" {
		if err := a.finishBulk(ctx, a.into); err != nil {
			return pipeline.Stats{}, err
		}
	}
	if err := a.digests(ctx); err != nil {
		return pipeline.Stats{}, err
	}
	f.Status = pipeline.StatusApplied
	if err := run.Ledger.RecordFile(ctx, tx, run.ID, f); err != nil {
		f.Status = pipeline.StatusProcessing
		return pipeline.Stats{}, err
	}
	committing := time.Now()
	if err := tx.Commit(); err != nil {
		f.Status = pipeline.StatusProcessing
		return pipeline.Stats{}, fmt.Errorf("apply: commit: %w", err)
	}
	if run.Log != nil {
		// Deferred constraints are checked here.
		run.Log.Debug("apply step", "file", f.Name, "step", "commit", "ms", time.Since(committing).Milliseconds())
	}
	f.Applied = true
	return pipeline.Stats{RowsIn: in, RowsOut: in}, nil
}

type applier struct {
	tx   *sqlx.Tx
	conn *sql.Conn // tx's connection
	run  *pipeline.Run
	f    *pipeline.File
	kept *kept    // what a speculation already sent, or nil
	size planSize // of f.Plan
	// into is the table new users are COPYed into: users, or the tenant's
	// own partition-to-be in a bulk load (bulk.go).
	into       string
	attachWait time.Duration // how long a bulk load tries to attach
}

func (a *applier) exec(ctx context.Context, what, q string, args ...any) error {
	started := time.Now()
	res, err := a.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("apply %s: %w", what, err)
	}
	if a.run.Log != nil {
		n, _ := res.RowsAffected()
		a.run.Log.Debug("apply step", "file", a.f.Name, "step", what, "rows", n, "ms", time.Since(started).Milliseconds())
	}
	return nil
}

// load creates a temporary table shaped like schema and COPYs recs into it.
func (a *applier) load(ctx context.Context, table string, schema *arrow.Schema, recs []arrow.Record) error {
	var cols, names []string
	for _, fld := range schema.Fields() {
		cols = append(cols, fld.Name+" "+sqlType(fld.Type))
		names = append(names, fld.Name)
	}
	if err := a.exec(ctx, "create "+table, "CREATE TEMP TABLE "+table+" ("+strings.Join(cols, ", ")+") ON COMMIT DROP"); err != nil {
		return err
	}
	_, err := pipeline.CopyRows(ctx, a.conn, table, names, func(l *pipeline.CopyLine) error {
		for _, rec := range recs {
			for i := 0; i < int(rec.NumRows()); i++ {
				for c := range names {
					copyValue(l, rec.Column(c), i)
				}
				if err := l.End(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply: copy into %s: %w", table, err)
	}
	return nil
}

func sqlType(t arrow.DataType) string {
	switch t.ID() {
	case arrow.INT32:
		return "integer"
	case arrow.INT64:
		return "bigint"
	case arrow.DATE32:
		return "date"
	case arrow.BOOL:
		return "boolean"
	}
	return "text"
}

// copyValue appends row i of col to l, as the column sqlType made for it.
func copyValue(l *pipeline.CopyLine, col arrow.Array, i int) {
	if col.IsNull(i) {
		l.Null()
		return
	}
	switch c := col.(type) {
	case *array.Int32:
		l.Int(int64(c.Value(i)))
	case *array.Int64:
		l.Int(c.Value(i))
	case *array.Boolean:
		l.Bool(c.Value(i))
	case *array.Date32:
		l.Date(int32(c.Value(i)))
	case *array.String:
		l.Text(c.Value(i))
	default:
		l.Text(col.ValueStr(i))
	}
}

// departments applies the department actions: creates first, then parents
// (resolved by name once every department of the file exists, so the order
// of rows does not matter), then activity.
func (a *applier) departments(ctx context.Context) error {
	if len(a.f.Plan.Departments) == 0 {
		return nil
	}
	t, run := a.run.Tenant.ID, a.run.ID
	if err := a.load(ctx, "plan_departments", schemas.PlanDepartments(), a.f.Plan.Departments); err != nil {
		return err
	}
	// Parents are compared by key (name_key with parent_key): comparing the
	// parent's display name with the key recorded a parent change in the
	// history of every department whose parent name has a capital letter.
	steps := []struct{ what, q string }{
		{"department history", `INSERT INTO department_history (tenant_id, run_id, department_id, action, effective_date, changes)
			SELECT $1, $2, d.id, p.action, $3, jsonb_strip_nulls(jsonb_build_object(
				'parent', CASE WHEN p.set_parent AND par.name_key IS DISTINCT FROM p.parent_key THEN jsonb_build_object('old', par.name_key, 'new', p.parent_key) END,
				'active', CASE WHEN d.active <> p.active THEN jsonb_build_object('old', d.active, 'new', p.active) END))
			FROM plan_departments p JOIN departments d ON d.tenant_id = $1 AND d.name_key = p.name_key
			LEFT JOIN departments par ON par.id = d.parent_id
			WHERE p.action <> 'create'`},
		{"department creates", `INSERT INTO departments (tenant_id, name, name_key, active)
			SELECT $1, p.name, p.name_key, p.active FROM plan_departments p WHERE p.action = 'create'
			ON CONFLICT (tenant_id, name_key) DO NOTHING`},
		{"department created history", `INSERT INTO department_history (tenant_id, run_id, department_id, action, effective_date, changes)
			SELECT $1, $2, d.id, 'create', $3, jsonb_build_object('name', jsonb_build_object('new', d.name))
			FROM plan_departments p JOIN departments d ON d.tenant_id = $1 AND d.name_key = p.name_key
			WHERE p.action = 'create'`},
		{"department parents", `UPDATE departments d SET parent_id = par.id, updated_at = now()
			FROM plan_departments p LEFT JOIN departments par ON par.tenant_id = $1 AND par.name_key = p.parent_key
			WHERE d.tenant_id = $1 AND d.name_key = p.name_key AND p.set_parent AND d.parent_id IS DISTINCT FROM par.id`},
		{"department activity", `UPDATE departments d SET active = p.active, updated_at = now()
			FROM plan_departments p WHERE d.tenant_id = $1 AND d.name_key = p.name_key AND d.active <> p.active`},
	}
	for _, s := range steps {
		if err := a.exec(ctx, s.what, s.q, params(s.q, t, run, a.run.LogicalDate)...); err != nil {
			return err
		}
	}
	return nil
}

// params passes a statement the first n of args, n being the highest $N it
// uses: PostgreSQL refuses parameters a statement does not reference.
func params(q string, args ...any) []any {
	n := 0
	for i := len(args); i > 0; i-- {
		if strings.Contains(q, fmt.Sprintf("$%d", i)) {
			n = i
			break
		}
	}
	return args[:n]
}

// historyFields are the user fields history records: old and new
// expressions (u is the user before, p the plan) and how they display.
var historyFields = []struct{ name, old, new, oldShow, newShow string }{
	{"employee_id", "u.employee_id", "p.employee_id", "", ""},
	{"email", "u.email", "p.email", "", ""},
	{"first_name", "u.first_name", "p.first_name", "", ""},
	{"last_name", "u.last_name", "p.last_name", "", ""},
	{"manager_id", "u.manager_id", "p.manager_id", "", ""},
	{"department", "u.department_id", "p.department_id", "od.name", "nd.name"},
	{"title", "u.title", "p.title", "", ""},
	{"location", "u.location", "p.location", "", ""},
	{"start_date", "u.start_date", "p.start_date", "", ""},
	{"deactivation_date", "u.deactivation_date", "p.deactivation_date", "", ""},
	{"custom", "u.custom", "p.custom::jsonb", "", ""},
	{"active", "u.active", "p.active", "", ""},
}

func historyChanges() string {
	var parts []string
	for _, h := range historyFields {
		oldShow, newShow := h.old, h.new
		if h.oldShow != "" {
			oldShow, newShow = h.oldShow, h.newShow
		}
		parts = append(parts, fmt.Sprintf("'%s', CASE WHEN %s IS DISTINCT FROM %s THEN jsonb_build_object('old', %s, 'new', %s) END",
			h.name, h.old, h.new, oldShow, newShow))
	}
	return "jsonb_strip_nulls(jsonb_build_object(" + strings.Join(parts, ",\n") + "))"
}
