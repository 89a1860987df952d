// Package diff compares a validated file with the tenant's current
// snapshot and decides one action per accepted row: create, update,
// deactivate, reactivate, schedule a deactivation, or nothing. It makes the
// checks that need the directory (identity, e-mails in use, managers, seats,
// omitted users, the mass-deactivation guard, department parents and
// loops) and hands apply a plan as Arrow records.
package diff

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// collectBefore is the file size, in rows, from which diff collects
// garbage before reading the rows (see Process): below it the pages are
// few and a collection costs more than it saves.
const collectBefore = 100_000

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "diff",
		Summary: "Decides each row's action against the current directory and makes the checks that need it (identity, email_in_use, managers, seats, omitted users, mass deactivation, department parents).",
		Ordered: true,
		Fields: []pipeline.Field{
			{Name: OptIncremental, Default: true, Help: "pass over the rows that say again what the directory holds, by the digest apply stores with each user, " +
				"and read only the users the other rows can reach (see stages/diff/digest.go); false reads and compares every user on every run, " +
				"as roster did before migration 0007. The first file after that migration is diffed in full and gives every user its digest"},
			{Name: OptIncrementalMaxChanged, Default: 10, Help: "the largest share (percent of the tenant's users) of rows left to diff for which roster reads only the users they reach; " +
				"above it, reading the whole directory in one pass is the faster way"},
		},
		New: func(o pipeline.Options) (any, error) {
			st := stage{incremental: o.Bool(OptIncremental), maxChangedPct: o.Int(OptIncrementalMaxChanged)}
			if st.maxChangedPct < 0 || st.maxChangedPct > 100 {
				return nil, fmt.Errorf("%s must be between 0 and 100, not %d", OptIncrementalMaxChanged, st.maxChangedPct)
			}
			return st, nil
		},
	}
}

// The stage's options.
const (
	OptIncremental           = "incremental"
	OptIncrementalMaxChanged = "incremental_max_changed_pct"
)

type stage struct {
	incremental   bool
	maxChangedPct int
}

// Prefetch reads the tenant's row digests while the file is still being
// parsed (a run of one file: see pipeline.Prefetcher).
func (stage) Prefetch(ctx context.Context, run *pipeline.Run) (any, error) {
	started := time.Now()
	s, err := loadStored(ctx, run.DB, run.Tenant.ID)
	if err == nil && run.Log != nil {
		run.Log.Debug("diff: digests read", "users", len(s.users), "ms", time.Since(started).Milliseconds())
	}
	return s, err
}

func days(t interface{ Unix() int64 }) int32 { return int32(t.Unix() / 86400) }

func (st stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	mem := run.Mem
	if mem == nil {
		mem = memory.NewGoAllocator()
	}
	depts, err := loadDepartments(ctx, run.DB, run.Tenant.ID, f.Kind == schemas.KindDepartments)
	if err != nil {
		return pipeline.Stats{}, err
	}
	plan := &pipeline.Plan{}
	switch f.Kind {
	case schemas.KindUsers:
		// Where a big file's diff spends its time, logged at debug level.
		var steps []any
		last := time.Now()
		step := func(name string) {
			now := time.Now()
			steps = append(steps, name+"_ms", now.Sub(last).Milliseconds())
			last = now
		}
		if f.Rows >= collectBefore {
			// Collect the earlier stages' garbage (validate's duplicate
			// maps, the CSV reader's records) before diff's row slice, its
			// largest allocation, so that the slice reuses those pages: on
			// this kind of VM a page touched for the first time is what
			// costs. 1M-row first load: readRows ~1 s → ~0.1 s for a 5 ms
			// collection; on an unchanged file the collection also marks
			// the snapshot (0.1-0.25 s) and the gain is about even.
			runtime.GC()
			step("gc")
		}
		// The file's rows first: gathering them needs no snapshot, and on
		// a big file it takes about as long as the snapshot read still has
		// to go, so the two overlap instead of following each other.
		rows, cols := readRows(f)
		step("rows")
		var sto *stored
		waiting := time.Now()
		if v, ok, err := f.Prefetched(ctx, Spec().Name); err != nil {
			return pipeline.Stats{}, err
		} else if ok {
			sto = v.(*stored)
			if run.Log != nil {
				run.Log.Debug("diff: digests read ahead", "file", f.Name, "users", len(sto.users), "waited_ms", time.Since(waiting).Milliseconds())
			}
		} else if sto, err = loadStored(ctx, run.DB, run.Tenant.ID); err != nil {
			return pipeline.Stats{}, err
		}
		step("digests_wait")
		d := &userDiff{run: run, f: f, stored: sto, depts: depts, today: days(run.LogicalDate), rows: rows, cols: cols, required: requiredFields()}
		if err := d.snapshot(ctx, st); err != nil {
			return pipeline.Stats{}, err
		}
		step("snapshot")
		if err := d.run_(); err != nil {
			return pipeline.Stats{}, err
		}
		step("decide")
		plan.Users = d.plan(mem)
		if rec := d.deptPlan(mem); rec != nil {
			plan.Departments = []arrow.Record{rec}
		}
		plan.Digests = d.digestPlan(mem)
		plan.Counts = d.counts()
		step("plan")
		if run.Log != nil {
			run.Log.Debug("diff: steps", append([]any{"file", f.Name}, steps...)...)
		}
	case schemas.KindDepartments:
		d := &deptDiff{f: f, depts: depts, dryRun: run.DryRun}
		d.read()
		d.decide()
		plan.Departments = []arrow.Record{d.plan(mem)}
		plan.Counts = d.counts()
	default:
		return pipeline.Stats{}, fmt.Errorf("diff: file kind %q", f.Kind)
	}
	f.Plan = plan
	f.Counts = plan.Counts
	c := plan.Counts
	accepted := c.Created + c.Updated + c.Deactivated + c.Reactivated + c.Scheduled + c.Unchanged
	return pipeline.Stats{RowsIn: int64(f.Rows), RowsOut: int64(accepted - c.Unchanged)}, nil
}

// snapshot digests the rows and reads the users they need: none for a
// tenant without users; with the incremental diff, the fast rows marked
// and the users the others reach; otherwise (or when too many rows are
// left) every user.
func (d *userDiff) snapshot(ctx context.Context, st stage) error {
	d.digestRows()
	if len(d.stored.users) == 0 {
		d.snap = &users{}
		d.snap.build()
		return nil
	}
	started := time.Now()
	if st.incremental {
		slow := d.matchFast()
		if slow*100 <= st.maxChangedPct*len(d.stored.users) {
			u, ok, err := d.loadReach(ctx)
			if err != nil {
				return err
			}
			if ok {
				d.snap = u
				if d.run.Log != nil {
					d.run.Log.Debug("diff: incremental", "file", d.f.Name, "rows", len(d.rows), "left", len(d.rows)-d.fastN(),
						"users_read", u.len(), "ms", time.Since(started).Milliseconds())
				}
				return nil
			}
		}
		for i := range d.rows {
			d.rows[i].fast = false
		}
		d.stored.fastRow, d.waiting = nil, nil
	}
	u, err := loadUsers(ctx, d.run.DB, d.run.Tenant.ID, len(d.stored.users))
	if err != nil {
		return err
	}
	d.snap = u
	if d.run.Log != nil {
		d.run.Log.Debug("diff: snapshot read", "file", d.f.Name, "users", u.len(), "ms", time.Since(started).Milliseconds())
	}
	return nil
}

// fastN counts the fast rows.
func (d *userDiff) fastN() int {
	n := 0
	for i := range d.rows {
		if d.rows[i].fast {
			n++
		}
	}
	return n
}

// digestPlan lists the row digests to store for users the file leaves as
// they are, where the stored one is not what the row says: the row's
// digest, or none for a row diff raised an issue about. A first file after
// migration 0007 gives every user its digest this way.
func (d *userDiff) digestPlan(mem memory.Allocator) arrow.Record {
	type set struct {
		id int64
		dg *digest
	}
	var todo []set
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected || r.fast || r.action != actNone || r.target < 0 {
			continue
		}
		k := d.stored.index(d.snap.id[r.target])
		if k < 0 {
			continue
		}
		su := &d.stored.users[k]
		switch {
		case r.flagged && su.hasDg:
			todo = append(todo, set{su.id, nil})
		case !r.flagged && (!su.hasDg || su.dg != d.dig[i]):
			todo = append(todo, set{su.id, &d.dig[i]})
		}
	}
	// Fast rows on a manager loop were reported (revertLoop): their
	// digests go.
	for _, id := range d.flaggedFast {
		if k := d.stored.index(id); k >= 0 && d.stored.users[k].hasDg {
			todo = append(todo, set{id, nil})
		}
	}
	if len(todo) == 0 {
		return nil
	}
	b := array.NewRecordBuilder(mem, schemas.PlanDigests())
	defer b.Release()
	ids, dgs := b.Field(0).(*array.Int64Builder), b.Field(1).(*array.FixedSizeBinaryBuilder)
	ids.Reserve(len(todo))
	dgs.Reserve(len(todo))
	for _, t := range todo {
		ids.Append(t.id)
		if t.dg == nil {
			dgs.AppendNull()
		} else {
			dgs.Append(t.dg[:])
		}
	}
	return b.NewRecord()
}

// plan builds the user actions: a record per batch of the file, in row
// order, for its rows that change something, and one for the omitted users
// a full-file tenant deactivates. The batches are built on every core. A
// text column that a batch's plan would copy unchanged (every row of the
// batch a create that takes the cell as the file has it: a first load,
// mostly) is the file's own array instead, not a copy (~90 MB less on a
// 1M-row first load).
func (d *userDiff) plan(mem memory.Allocator) []arrow.Record {
	recs := make([]arrow.Record, len(d.cols))
	pipeline.Parallel(len(d.cols), 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			recs[b] = d.planBatch(mem, b)
		}
	})
	out := slices.DeleteFunc(recs, func(r arrow.Record) bool { return r == nil })
	if len(d.omitted) > 0 {
		var text [planWidth]int
		for _, j := range d.omitted {
			planText(&text, schemas.ActDeactivate, &d.snap.st[j])
		}
		p := newPlanBuilder(mem, len(d.omitted), text, [planWidth]bool{})
		defer p.release()
		for _, j := range d.omitted {
			s := d.snap.state(j)
			s.active = false
			p.emit(0, schemas.ActDeactivate, d.snap.id[j], s, 0, d.today, nil)
		}
		out = append(out, p.record(len(d.omitted), nil))
	}
	return out
}

// planWidth is the number of columns of schemas.PlanUsers, which the
// plan's builders index by position.
const planWidth = 18

// planText adds a plan row's text to text, by plan column, for reserving.
func planText(text *[planWidth]int, action string, s *state) {
	text[1] += len(action)
	text[3] += len(s.eid)
	text[4] += len(s.email)
	text[5] += len(s.first)
	text[6] += len(s.last)
	text[9] += len(s.deptKey)
	text[10] += len(s.title)
	text[11] += len(s.loc)
	text[14] += len(s.custom)
}

// planReuse maps the plan's text columns that can be the file's own
// array to their field.
var planReuse = [...]struct{ col, field int }{{3, fEID}, {4, fEmail}, {5, fFirst}, {6, fLast}, {10, fTitle}, {11, fLoc}}

// planBatch builds batch b's plan record, or nil when none of its rows
// changes anything.
func (d *userDiff) planBatch(mem memory.Allocator, b int) arrow.Record {
	br := &d.cols[b]
	rows := d.rows[br.base : br.base+br.n]
	// Room for every row and its text up front: grown as it goes, a first
	// load's plan copied its buffers a dozen times over.
	n, text := 0, [planWidth]int{}
	for i := range rows {
		if r := &rows[i]; !r.rejected && r.action != actNone {
			n++
			planText(&text, r.action.String(), &r.fin)
		}
	}
	if n == 0 {
		return nil
	}
	var reuse [planWidth]arrow.Array
	if n == len(rows) {
		for _, c := range planReuse {
			col := br.str[c.field]
			if col != nil && asInFile(rows, c.field, col) {
				reuse[c.col], text[c.col] = col, 0
			}
		}
	}
	var skip [planWidth]bool
	for c, a := range reuse {
		skip[c] = a != nil
	}
	p := newPlanBuilder(mem, n, text, skip)
	defer p.release()
	for i := range rows {
		r := &rows[i]
		if r.rejected || r.action == actNone {
			continue
		}
		var userID int64
		if r.target >= 0 {
			userID = d.snap.id[r.target]
		}
		var mgrRow int32
		if r.fin.mgrRow >= 0 {
			mgrRow = d.rows[r.fin.mgrRow].src
		}
		eff := d.today
		if r.action == actDeactivate && r.fin.hasDeact && r.fin.deact < eff {
			eff = r.fin.deact
		}
		// The digest vouches for a row applied without an issue from diff.
		var dg *digest
		if !r.flagged {
			dg = &d.dig[r.pos]
		}
		p.emit(r.src, r.action.String(), userID, r.fin, mgrRow, eff, dg)
	}
	return p.record(n, &reuse)
}

// asInFile reports whether every row's final value of text field fi is
// the file's cell, in col, as the plan would write it: set, not null (the
// employee id: null exactly where the plan has none), and the same text.
func asInFile(rows []inRow, fi int, col *array.String) bool {
	if fi != fEID && col.NullN() > 0 {
		return false
	}
	for i := range rows {
		r := &rows[i]
		if !r.sets(fi) {
			return false
		}
		s := &r.fin
		var v string
		switch fi {
		case fEID:
			if s.hasEID != col.IsValid(i) {
				return false
			}
			if !s.hasEID {
				continue
			}
			v = s.eid
		case fEmail:
			v = s.email
		case fFirst:
			v = s.first
		case fLast:
			v = s.last
		case fTitle:
			v = s.title
		case fLoc:
			v = s.loc
		}
		if v != col.Value(i) {
			return false
		}
	}
	return true
}

// planBuilder appends plan rows; the columns in skip, taken from the file,
// are left empty and filled in by record.
type planBuilder struct {
	b    *array.RecordBuilder
	f    []array.Builder
	skip [planWidth]bool
}

// newPlanBuilder makes a builder for n rows with text[c] bytes of text in
// column c; the columns in skip are not reserved (with Arrow's rounding,
// an unused offsets buffer is 8 bytes a row).
func newPlanBuilder(mem memory.Allocator, n int, text [planWidth]int, skip [planWidth]bool) *planBuilder {
	b := array.NewRecordBuilder(mem, schemas.PlanUsers())
	p := &planBuilder{b: b, f: b.Fields(), skip: skip}
	for c, fb := range p.f {
		if skip[c] {
			continue
		}
		fb.Reserve(n)
		if sb, ok := fb.(*array.StringBuilder); ok {
			sb.ReserveData(text[c])
		}
	}
	return p
}

func (p *planBuilder) release() { p.b.Release() }

func (p *planBuilder) emit(row int32, action string, userID int64, s state, mgrRow int32, effective int32, dg *digest) {
	f, skip := p.f, &p.skip
	text := func(c int, v string) {
		if !skip[c] {
			f[c].(*array.StringBuilder).Append(v)
		}
	}
	f[0].(*array.Int32Builder).Append(row)
	f[1].(*array.StringBuilder).Append(action)
	optInt64(f[2].(*array.Int64Builder), userID, userID != 0)
	if !skip[3] {
		optString(f[3].(*array.StringBuilder), s.eid, s.hasEID)
	}
	text(4, s.email)
	text(5, s.first)
	text(6, s.last)
	optInt64(f[7].(*array.Int64Builder), s.mgr, s.mgr != 0)
	if mgrRow > 0 {
		f[8].(*array.Int32Builder).Append(mgrRow)
	} else {
		f[8].AppendNull()
	}
	optString(f[9].(*array.StringBuilder), s.deptKey, s.deptKey != "")
	text(10, s.title)
	text(11, s.loc)
	optDate(f[12].(*array.Date32Builder), s.start, s.hasStart)
	optDate(f[13].(*array.Date32Builder), s.deact, s.hasDeact)
	f[14].(*array.StringBuilder).Append(s.custom)
	f[15].(*array.BooleanBuilder).Append(s.active)
	f[16].(*array.Date32Builder).Append(arrow.Date32(effective))
	if dg != nil {
		f[17].(*array.FixedSizeBinaryBuilder).Append(dg[:])
	} else {
		f[17].AppendNull()
	}
}

// record makes the n appended rows a record, with the columns in reuse
// (nil: none) taken as they are instead of the appended copies.
func (p *planBuilder) record(n int, reuse *[planWidth]arrow.Array) arrow.Record {
	cols := make([]arrow.Array, len(p.f))
	for c, fb := range p.f {
		cols[c] = fb.NewArray()
		if reuse != nil && reuse[c] != nil {
			cols[c].Release()
			cols[c] = reuse[c]
			cols[c].Retain()
		}
	}
	rec := array.NewRecord(schemas.PlanUsers(), cols, int64(n))
	for _, a := range cols {
		a.Release() // the record holds its own reference
	}
	return rec
}

// deptPlan lists the departments a user file creates or reactivates.
func (d *userDiff) deptPlan(mem memory.Allocator) arrow.Record {
	if len(d.newDepts) == 0 && len(d.reactDepts) == 0 {
		return nil
	}
	b := array.NewRecordBuilder(mem, schemas.PlanDepartments())
	defer b.Release()
	for _, key := range d.deptOrder {
		appendDept(b, 0, schemas.ActCreate, 0, d.newDepts[key], key, "", false, true)
	}
	for _, key := range sortedKeys(d.reactDepts) {
		j := d.depts.byKey[key]
		appendDept(b, 0, schemas.ActReactivate, d.depts.id[j], d.depts.name[j], key, "", false, true)
	}
	return b.NewRecord()
}

func (d *deptDiff) plan(mem memory.Allocator) arrow.Record {
	b := array.NewRecordBuilder(mem, schemas.PlanDepartments())
	defer b.Release()
	for _, r := range d.rows {
		if r.rejected || r.action == "" {
			continue
		}
		var id int64
		if r.existing >= 0 {
			id = d.depts.id[r.existing]
		}
		appendDept(b, int32(r.src), r.action, id, r.name, r.key, r.finParent, true, r.finActive)
	}
	return b.NewRecord()
}

func appendDept(b *array.RecordBuilder, row int32, action string, id int64, name, key, parent string, setParent, active bool) {
	f := b.Fields()
	f[0].(*array.Int32Builder).Append(row)
	f[1].(*array.StringBuilder).Append(action)
	optInt64(f[2].(*array.Int64Builder), id, id != 0)
	f[3].(*array.StringBuilder).Append(name)
	f[4].(*array.StringBuilder).Append(key)
	optString(f[5].(*array.StringBuilder), parent, parent != "")
	f[6].(*array.BooleanBuilder).Append(setParent)
	f[7].(*array.BooleanBuilder).Append(active)
}

func optInt64(b *array.Int64Builder, v int64, ok bool) {
	if ok {
		b.Append(v)
	} else {
		b.AppendNull()
	}
}

func optString(b *array.StringBuilder, v string, ok bool) {
	if ok {
		b.Append(v)
	} else {
		b.AppendNull()
	}
}

func optDate(b *array.Date32Builder, v int32, ok bool) {
	if ok {
		b.Append(arrow.Date32(v))
	} else {
		b.AppendNull()
	}
}
