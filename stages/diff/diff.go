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
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "diff",
		Summary: "Decides each row's action against the current directory and makes the checks that need it (identity, email_in_use, managers, seats, omitted users, mass deactivation, department parents).",
		Ordered: true,
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

// Prefetch reads the tenant's users while the file is still being
// parsed (a run of one file: see pipeline.Prefetcher).
func (stage) Prefetch(ctx context.Context, run *pipeline.Run) (any, error) {
	started := time.Now()
	u, err := loadUsers(ctx, run.DB, run.Tenant.ID)
	if err == nil && run.Log != nil {
		run.Log.Debug("diff: snapshot read", "users", u.len(), "ms", time.Since(started).Milliseconds())
	}
	return u, err
}

func days(t interface{ Unix() int64 }) int32 { return int32(t.Unix() / 86400) }

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
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
		// The file's rows first: gathering them needs no snapshot, and on
		// a big file it takes about as long as the snapshot read still has
		// to go (its fresh memory is slow to touch on a VM), so the two
		// overlap instead of following each other.
		rows, cols := readRows(f)
		var snap *users
		waiting := time.Now()
		if v, ok, err := f.Prefetched(ctx, Spec().Name); err != nil {
			return pipeline.Stats{}, err
		} else if ok {
			snap = v.(*users)
			if run.Log != nil {
				run.Log.Debug("diff: snapshot read ahead", "file", f.Name, "users", snap.len(), "waited_ms", time.Since(waiting).Milliseconds())
			}
		} else if snap, err = loadUsers(ctx, run.DB, run.Tenant.ID); err != nil {
			return pipeline.Stats{}, err
		}
		d := &userDiff{run: run, f: f, snap: snap, depts: depts, today: days(run.LogicalDate), rows: rows, cols: cols}
		if err := d.run_(); err != nil {
			return pipeline.Stats{}, err
		}
		plan.Users = []arrow.Record{d.plan(mem)}
		if rec := d.deptPlan(mem); rec != nil {
			plan.Departments = []arrow.Record{rec}
		}
		plan.Counts = d.counts()
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

// plan builds the user actions record: every row that changes something,
// and the omitted users a full-file tenant deactivates.
func (d *userDiff) plan(mem memory.Allocator) arrow.Record {
	b := array.NewRecordBuilder(mem, schemas.PlanUsers())
	defer b.Release()
	f := b.Fields()
	// Room for every row and its text up front: grown as it goes, a first
	// load's plan copied its buffers a dozen times over.
	n, text := len(d.omitted), [17]int{}
	for i := range d.rows {
		if r := &d.rows[i]; !r.rejected && r.action != actNone {
			n++
			s := &r.fin
			text[1] += len(r.action.String())
			text[3] += len(s.eid)
			text[4] += len(s.email)
			text[5] += len(s.first)
			text[6] += len(s.last)
			text[9] += len(s.deptKey)
			text[10] += len(s.title)
			text[11] += len(s.loc)
			text[14] += len(s.custom)
		}
	}
	for c, fb := range f {
		fb.Reserve(n)
		if sb, ok := fb.(*array.StringBuilder); ok {
			sb.ReserveData(text[c] + 16*len(d.omitted)) // omitted users: a guess
		}
	}
	emit := func(row int32, action string, userID int64, s state, mgrRow int32, effective int32) {
		f[0].(*array.Int32Builder).Append(row)
		f[1].(*array.StringBuilder).Append(action)
		optInt64(f[2].(*array.Int64Builder), userID, userID != 0)
		optString(f[3].(*array.StringBuilder), s.eid, s.hasEID)
		f[4].(*array.StringBuilder).Append(s.email)
		f[5].(*array.StringBuilder).Append(s.first)
		f[6].(*array.StringBuilder).Append(s.last)
		optInt64(f[7].(*array.Int64Builder), s.mgr, s.mgr != 0)
		if mgrRow > 0 {
			f[8].(*array.Int32Builder).Append(mgrRow)
		} else {
			f[8].AppendNull()
		}
		optString(f[9].(*array.StringBuilder), s.deptKey, s.deptKey != "")
		f[10].(*array.StringBuilder).Append(s.title)
		f[11].(*array.StringBuilder).Append(s.loc)
		optDate(f[12].(*array.Date32Builder), s.start, s.hasStart)
		optDate(f[13].(*array.Date32Builder), s.deact, s.hasDeact)
		f[14].(*array.StringBuilder).Append(s.custom)
		f[15].(*array.BooleanBuilder).Append(s.active)
		f[16].(*array.Date32Builder).Append(arrow.Date32(effective))
	}
	for i := range d.rows {
		r := &d.rows[i]
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
		emit(r.src, r.action.String(), userID, r.fin, mgrRow, eff)
	}
	for _, j := range d.omitted {
		s := d.snap.state(j)
		s.active = false
		emit(0, schemas.ActDeactivate, d.snap.id[j], s, 0, d.today)
	}
	return b.NewRecord()
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
