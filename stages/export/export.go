// Package export writes the analytics tables (Visier-style) of a tenant for
// one date as Hive-style partitions of Parquet (or CSV) files:
//
//	OUT/<table>/tenant=<id>/dt=YYYY-MM-DD/part-0.parquet + _manifest.json
//
// employee_snapshot and department_hierarchy describe the directory as of
// the date; employee_events and employee_profile_history hold what the runs
// of that logical date recorded. "As of D" replays the history recorded by
// runs of logical date <= D, so a past date is rebuilt as it was known then,
// and exporting a date again writes the same bytes. DICTIONARY.md describes
// every table and column; it is generated from tables.go.
//
// The package is both the pipeline's PerRun "export" stage and the library
// behind `roster export`.
package export

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"time"

	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
)

// Formats and compressions.
const (
	FormatParquet     = "parquet"
	FormatCSV         = "csv"
	CompressionZstd   = "zstd"
	CompressionSnappy = "snappy"
)

// DefaultRowGroupRows is the default Parquet row group length: large
// tenants get row groups of a useful size (tens of MB compressed) without
// holding a whole table in memory.
const DefaultRowGroupRows = 1 << 19

// batchRows is how many rows are built in memory before they go to the
// writer.
const batchRows = 1 << 16

// Options configure an export.
type Options struct {
	// Out is the root directory of the partitions (required).
	Out string
	// Format is "parquet" (default) or "csv".
	Format string
	// Compression of Parquet files: "zstd" (default) or "snappy".
	Compression string
	// RowGroupRows caps a Parquet row group (default DefaultRowGroupRows).
	RowGroupRows int
	// Allocator for the Arrow builders (default: Go's).
	Allocator memory.Allocator

	// wrap, in tests, wraps each data file's writer (to make it fail).
	wrap func(table string, w io.Writer) io.Writer
}

func (o Options) normalize() (Options, error) {
	if o.Format == "" {
		o.Format = FormatParquet
	}
	if o.Compression == "" {
		o.Compression = CompressionZstd
	}
	if o.RowGroupRows == 0 {
		o.RowGroupRows = DefaultRowGroupRows
	}
	if o.Allocator == nil {
		o.Allocator = memory.NewGoAllocator()
	}
	switch {
	case o.Format != FormatParquet && o.Format != FormatCSV:
		return o, fmt.Errorf("export: format must be parquet or csv, not %q", o.Format)
	case o.Compression != CompressionZstd && o.Compression != CompressionSnappy:
		return o, fmt.Errorf("export: compression must be zstd or snappy, not %q", o.Compression)
	case o.RowGroupRows < 1:
		return o, fmt.Errorf("export: row group rows must be positive")
	}
	return o, nil
}

func (o Options) batchRows() int { return min(batchRows, o.RowGroupRows) }

// Result is what an export wrote.
type Result struct {
	Tenant string        `json:"tenant"`
	Date   string        `json:"date"`
	Format string        `json:"format"`
	Out    string        `json:"out"`
	Tables []TableResult `json:"tables"`
}

// TableResult is one table's partition.
type TableResult struct {
	Table      string  `json:"table"`
	Dir        string  `json:"dir"`
	File       string  `json:"file"`
	Rows       int64   `json:"rows"`
	Bytes      int64   `json:"bytes"`
	SHA256     string  `json:"sha256"`
	SourceRuns []int64 `json:"source_runs"`
}

// Rows is the total number of rows written.
func (r Result) Rows() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.Rows
	}
	return n
}

// exportLockSpace is the first key of the advisory lock that serialises a
// tenant's exports (the stage of a run and `roster export` may race).
const exportLockSpace = 7_061_2002

// Export writes the four tables of tenant for date under opts.Out,
// replacing their dt=date partitions. Every file is written under a
// temporary name and renamed into place only when all four tables were
// written: an export that fails or is cancelled leaves the previous
// partitions intact.
func Export(ctx context.Context, db *sqlx.DB, tenant string, date time.Time, opts Options) (Result, error) {
	o, err := opts.normalize()
	if err != nil {
		return Result{}, err
	}
	if o.Out == "" {
		return Result{}, fmt.Errorf("export: no output directory")
	}
	if _, err := (pipeline.Tenants{DB: db}).Get(ctx, tenant); err != nil {
		return Result{}, err
	}
	y, m, dd := date.Date()
	d := time.Date(y, m, dd, 0, 0, 0, 0, time.UTC)
	res := Result{Tenant: tenant, Date: d.Format(time.DateOnly), Format: o.Format, Out: o.Out}

	unlock, err := lockExports(ctx, db, tenant)
	if err != nil {
		return res, err
	}
	defer unlock()
	// Repeatable read: every table sees the same committed runs. The
	// transaction only creates temporary objects and is rolled back.
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return res, fmt.Errorf("export: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only; the temporary objects go with it
	src := &source{tx: tx, tenant: tenant, ds: res.Date}
	if err := src.prepare(ctx); err != nil {
		return res, err
	}
	depts, byName, err := src.departments(ctx)
	if err != nil {
		return res, err
	}

	w := &writer{src: src, depts: depts, byName: byName, today: toDay(d)}
	fills := map[*table]func(context.Context, *partition) error{
		snapshotTable: w.snapshot, profileTable: w.profile, eventsTable: w.events, departmentTable: w.departments,
	}
	var parts []*partition
	defer func() {
		for _, p := range parts {
			p.discard()
		}
	}()
	for _, t := range allTables {
		p, err := newPartition(t, tenant, d, o, o.Allocator)
		if err != nil {
			return res, err
		}
		p.ctx = ctx
		parts = append(parts, p)
		if err := fills[t](ctx, p); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				// Cancelling also ends the transaction; say why.
				err = fmt.Errorf("export %s: %w (%v)", t.name, cerr, err)
			}
			return res, err
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("export %s: %w", t.name, err)
		}
		if err := p.finish(); err != nil {
			return res, err
		}
	}
	// The point of no return: from here the partitions are replaced, one
	// rename per file, whatever the context says.
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	for _, p := range parts {
		if err := p.publish(); err != nil {
			return res, err
		}
		res.Tables = append(res.Tables, TableResult{Table: p.t.name, Dir: p.dir, File: p.final, Rows: p.rows,
			Bytes: p.out.n, SHA256: p.sha, SourceRuns: p.sourceRuns})
	}
	return res, nil
}

// lockExports takes the tenant's export lock on a dedicated connection,
// waiting for an export in progress, and returns its release.
func lockExports(ctx context.Context, db *sqlx.DB, tenant string) (func(), error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("export: lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, exportLockSpace, tenant); err != nil {
		discard(conn)
		return nil, fmt.Errorf("export: lock tenant %s: %w", tenant, err)
	}
	return func() {
		if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, hashtext($2))`, exportLockSpace, tenant); err != nil {
			discard(conn) // never return a connection that may still hold the lock to the pool
			return
		}
		conn.Close()
	}, nil
}

// discard closes a connection instead of returning it to the pool: its
// session (and any lock it holds) ends with it.
func discard(conn *sqlx.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // the point is the error
	conn.Close()
}

// writer fills the tables from the source.
type writer struct {
	src    *source
	depts  []*dept
	byName map[string]*dept
	today  day
}

// attrs writes the user columns shared by employee_snapshot and
// employee_profile_history, user_id to custom_fields.
func (w *writer) attrs(p *partition, u *user) {
	dp := lookup(w.byName, u.dept)
	p.i64(u.id)
	p.nstr(u.eid)
	p.str(u.email)
	p.str(u.first)
	p.str(u.last)
	p.ni64(u.mgr)
	p.nstr(u.mgrEID)
	p.nstr(u.mgrEmail)
	if dp != nil {
		p.i64(dp.id)
	} else {
		p.ni64(nil)
	}
	p.nstr(u.dept)
	if dp != nil {
		p.str(dp.path)
	} else {
		p.nstr(nil)
	}
	p.str(u.title)
	p.str(u.loc)
	p.nday(u.start)
	p.nday(u.deact)
	p.bool(u.active)
	p.str(u.custom)
}

func (w *writer) snapshot(ctx context.Context, p *partition) error {
	return w.src.snapshot(ctx, func(u *user) error {
		p.str(w.src.tenant)
		p.day(w.today)
		w.attrs(p, u)
		p.i64(u.runID)
		p.ts(u.recorded)
		p.run(u.runID)
		return p.endRow()
	})
}

func (w *writer) profile(ctx context.Context, p *partition) error {
	return w.src.changes(ctx, true, func(u *user) error {
		p.str(w.src.tenant)
		p.day(w.today)
		w.attrs(p, u)
		p.day(*u.effDate)
		if u.nextEff != nil {
			end := later(*u.nextEff, *u.effDate)
			p.nday(&end)
		} else {
			p.nday(nil)
		}
		p.str(u.action)
		p.str(u.fields)
		p.ni64(u.historyID)
		p.i64(u.runID)
		p.ts(u.recorded)
		p.run(u.runID)
		return p.endRow()
	})
}

func (w *writer) events(ctx context.Context, p *partition) error {
	return w.src.changes(ctx, false, func(u *user) error {
		ch, err := parseChanges(u)
		if err != nil {
			return err
		}
		for _, e := range deriveEvents(u, ch) {
			p.str(w.src.tenant)
			p.day(e.date)
			p.str(e.typ)
			p.i64(u.id)
			p.nstr(u.eid)
			p.str(u.email)
			p.str(u.first)
			p.str(u.last)
			p.nstr(e.old)
			p.nstr(e.new)
			p.nstr(u.dept)
			p.nstr(u.mgrEID)
			p.str(u.title)
			p.str(u.loc)
			p.str(u.action)
			p.ni64(u.historyID)
			p.i64(u.runID)
			p.ts(u.recorded)
			p.run(u.runID)
			if err := p.endRow(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *writer) departments(_ context.Context, p *partition) error {
	byID := map[int64]*dept{}
	for _, d := range w.depts {
		byID[d.id] = d
	}
	for _, d := range w.depts {
		p.str(w.src.tenant)
		p.day(w.today)
		p.i64(d.id)
		p.str(d.name)
		if d.parent != nil {
			p.i64(*d.parent)
			p.str(byID[*d.parent].name)
		} else {
			p.ni64(nil)
			p.nstr(nil)
		}
		p.i32(d.level)
		p.str(d.path)
		p.bool(d.active)
		if h := d.head; h != nil {
			p.i64(h.id)
			p.nstr(h.eid)
			p.str(h.email)
			p.str(h.first)
			p.str(h.last)
		} else {
			p.ni64(nil)
			p.nstr(nil)
			p.nstr(nil)
			p.nstr(nil)
			p.nstr(nil)
		}
		p.i64(d.headcount)
		p.ni64(d.runID)
		p.ts(d.recorded)
		if d.runID != nil {
			p.run(*d.runID)
		}
		if err := p.endRow(); err != nil {
			return err
		}
	}
	return nil
}
