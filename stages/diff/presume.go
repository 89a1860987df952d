package diff

import (
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/roster-hr/roster/pipeline"
)

// Presumer decides the rows of a user file for a tenant that has no users
// yet a batch at a time, before the whole file has been seen, the way diff
// will decide them: it is how apply starts a first load's COPY while diff
// still works (apply's speculation). A row is decided by diff's own code
// (readBatch, decide, rowDigest, the plan's builder), so it comes out as
// the plan will have it.
//
// What needs the whole file it presumes. A row's manager is the accepted
// row with that e-mail or id, wherever it is in the file (apply reserves
// every accepted row's id before the first is sent); a row whose manager
// is no accepted row, or itself, it holds back for diff to decide. That
// the manager turns out rejected, or on a loop, or that diff decides
// anything else otherwise (a department it reactivates, a required field
// a JSON row leaves out), is for apply to find when it compares what it
// sent with the plan: a Presumer is usually right, never trusted.
type Presumer struct {
	d          *userDiff
	colIdx     map[string]int
	customCols []string
	skip       [numFields]pipeline.RowSet
	base       int // the next batch's first position
	next       int // the next batch
	keys       deptKeys
	// The accepted rows' source rows by e-mail and by id: the managers a
	// row can be presumed with (built by the first Next).
	byEmail, byEID map[string]int32
	rows           []inRow // the batch's rows, reused
	buf            []byte
}

// NewPresumer returns a Presumer of f's rows on the run's logical date. f
// is read as validate left it: the caller passes a File of its own with
// copies of Rejected and Skip, since diff adds to them meanwhile.
func NewPresumer(run *pipeline.Run, f *pipeline.File) *Presumer {
	colIdx, customCols, skip := batchLayout(f)
	return &Presumer{
		d: &userDiff{run: run, f: f, today: days(run.LogicalDate), required: requiredFields(),
			cols: make([]batchRows, len(f.Batches))},
		colIdx: colIdx, customCols: customCols, skip: skip, keys: deptKeys{},
	}
}

// Departments lists the departments the file's accepted rows name, by key
// with the first spelling, in the order diff creates them for a tenant
// that has none of them (diff leaves out the ones the tenant has).
func (p *Presumer) Departments() (keys, names []string) {
	seen := map[string]bool{}
	p.cells(fDept, func(_ int32, name string) {
		if key := p.keys.of(name); key != "" && !seen[key] {
			seen[key] = true
			keys, names = append(keys, key), append(names, name)
		}
	})
	return keys, names
}

// index maps the accepted rows' e-mails and ids to their source rows.
// Validate rejected every e-mail and id two rows share, so a key names one
// row.
func (p *Presumer) index() {
	p.byEmail, p.byEID = make(map[string]int32, p.d.f.Rows), map[string]int32{}
	p.cells(fEmail, func(src int32, v string) { p.byEmail[v] = src })
	p.cells(fEID, func(src int32, v string) { p.byEID[v] = src })
}

// cells calls fn, in row order, with the source row and text of field fi
// on every accepted row that gives it (not skipped, not empty).
func (p *Presumer) cells(fi int, fn func(src int32, v string)) {
	f := p.d.f
	ci, ok := p.colIdx[fieldCol[fi]]
	if !ok {
		return
	}
	for b, base := 0, 0; b < len(f.Batches); b++ {
		rec := f.Batches[b]
		src := rec.Column(0).(*array.Int32)
		col, isText := rec.Column(ci).(*array.String)
		n := int(rec.NumRows())
		for i := 0; isText && i < n; i++ {
			if pos := base + i; !f.Rejected.Has(pos) && !p.skip[fi].Has(pos) && col.IsValid(i) && col.Value(i) != "" {
				fn(src.Value(i), col.Value(i))
			}
		}
		base += n
	}
}

// Next returns the plan rows (schemas.PlanUsers, all creates) presumed for
// the file's next batch, nil when it presumes none of them, and false once
// every batch was asked for.
func (p *Presumer) Next(mem memory.Allocator) (arrow.Record, bool) {
	d := p.d
	if p.next >= len(d.f.Batches) {
		return nil, false
	}
	if p.byEmail == nil {
		p.index()
	}
	b, base := p.next, p.base
	n := int(d.f.Batches[b].NumRows())
	p.next, p.base = b+1, base+n
	if cap(p.rows) < n {
		p.rows = make([]inRow, n)
	}
	rows := p.rows[:n]
	clear(rows)
	d.cols[b] = readBatch(d.f, b, base, rows, p.colIdx, p.customCols, &p.skip)
	// Once the batch is decided its cells are in the record (the batch's
	// arrays stay the file's): the custom cells go.
	defer func() { d.cols[b] = batchRows{} }()
	type presumed struct {
		r      *inRow
		mgrSrc int32
		dg     digest
	}
	var out []presumed
	var text [planWidth]int
	for i := range rows {
		r := &rows[i]
		if r.rejected || d.decide(r, p.keys) != nil {
			continue // diff rejects a new user without a required field
		}
		// No manager cell, or an empty one: a new user has none.
		var mgrSrc int32
		if col, ref := managerRef(d, r); ref != "" {
			idx := p.byEmail
			if col == fieldCol[fMgrID] {
				idx = p.byEID
			}
			src, ok := idx[ref]
			if !ok || src == r.src {
				continue // no such row, or the row itself: diff decides it
			}
			mgrSrc = src
		}
		var dg digest
		dg, p.buf = d.rowDigest(r, p.buf)
		out = append(out, presumed{r, mgrSrc, dg})
		planText(&text, r.action.String(), &r.fin)
	}
	if len(out) == 0 {
		return nil, true
	}
	pb := newPlanBuilder(mem, len(out), text, [planWidth]bool{})
	defer pb.release()
	for _, o := range out {
		pb.emit(o.r.src, o.r.action.String(), 0, o.r.fin, o.mgrSrc, d.today, &o.dg)
	}
	return pb.record(len(out), nil), true
}
