package diff

import (
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// field indexes of a user row.
const (
	fEID = iota
	fEmail
	fFirst
	fLast
	fMgrEmail
	fMgrID
	fDept
	fTitle
	fLoc
	fStart
	fDeact
	numFields
)

var fieldCol = [numFields]string{schemas.ColEmployeeID, schemas.ColEmail, schemas.ColFirstName, schemas.ColLastName,
	schemas.ColManagerEmail, schemas.ColManagerID, schemas.ColDepartment, schemas.ColTitle, schemas.ColLocation,
	schemas.ColStartDate, schemas.ColDeactivationDate}

type kv struct{ k, v string }

// inRow is one accepted (or rejected) row of a user file. Its strings point
// into the Arrow batches; nothing is copied.
type inRow struct {
	// A million of these live through diff, so they are packed: 32-bit
	// indexes, the flags and the action in one byte each together, the
	// custom cells elsewhere (280 → 200 bytes a row, 80 MB of fresh memory
	// less per million rows).
	pos    int32
	src    int32
	batch  int32  // the row's batch and its index there: its cells are
	idx    int32  // read from the Arrow columns (userDiff.val), not copied
	has    uint32 // bit f: the row sets field f (column present, not skipped)
	start  int32
	deact  int32
	target int32 // snapshot index, or -1 for a new user
	// The row's custom cells: custN of its batch's cells from custAt
	// (batchRows.custom), rather than a slice of its own.
	custAt int32
	custN  uint32

	rejected bool
	startOK  bool // start holds a date (else the cell was empty)
	deactOK  bool
	mgrSet   bool // the manager field applies
	// same: fin equals the snapshot's state when decided (its manager
	// still the snapshot's), so classify need only look at the manager.
	same bool
	// fast: the row says again what its user is (digest.go); diff leaves
	// it alone and counts it unchanged.
	fast bool
	// flagged: diff raised an issue about the row, so apply stores no row
	// digest for its user.
	flagged bool

	// decided by diff
	action act
	fin    state
}

// act is a row's action, one byte in inRow; actions names it as the plan
// and the counts spell it (the empty string: nothing to do).
type act uint8

const (
	actNone act = iota
	actCreate
	actUpdate
	actDeactivate
	actReactivate
	actSchedule
)

var actions = [...]string{actNone: "", actCreate: schemas.ActCreate, actUpdate: schemas.ActUpdate,
	actDeactivate: schemas.ActDeactivate, actReactivate: schemas.ActReactivate, actSchedule: schemas.ActSchedule}

func (a act) String() string { return actions[a] }

func (r *inRow) sets(f int) bool { return r.has&(1<<f) != 0 }

// open reports whether diff decides row r: validate and diff did not
// reject it, and it is not fast.
func (r *inRow) open() bool { return !r.rejected && !r.fast }

// state is a user's state: before (from the snapshot) or after the file.
type state struct {
	eid      string
	email    string
	first    string
	last     string
	deptKey  string
	title    string
	loc      string
	custom   string
	mgr      int64 // user id; 0 none
	mgrRow   int32 // new user's row index, -1 none
	start    int32
	deact    int32
	hasEID   bool
	hasStart bool
	hasDeact bool
	active   bool
}

func (u *users) state(i int) state { return u.st[i] }

// val is the text of field fi on row r: empty when the row does not set
// it (column absent or the field skipped) and for the date fields, which
// are read as dates.
func (d *userDiff) val(r *inRow, fi int) string {
	if !r.sets(fi) {
		return ""
	}
	if s := d.cols[r.batch].str[fi]; s != nil {
		return s.Value(int(r.idx))
	}
	return ""
}

// readRows gathers the user rows of f's typed batches, and per batch the
// text column of each field and the rows' custom cells.
func readRows(f *pipeline.File) ([]inRow, []batchRows) {
	colIdx, customCols, skip := batchLayout(f)
	// Batches are independent: each fills its own part of out, on every
	// core (a million rows is 62 batches).
	out := make([]inRow, f.Rows)
	cols := make([]batchRows, len(f.Batches))
	bases := make([]int, len(f.Batches))
	for b, base := 0, 0; b < len(f.Batches); b++ {
		bases[b] = base
		base += int(f.Batches[b].NumRows())
	}
	pipeline.Parallel(len(f.Batches), 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			cols[b] = readBatch(f, b, bases[b], out[bases[b]:], colIdx, customCols, &skip)
		}
	})
	return out, cols
}

// batchLayout is what readBatch needs to know of f's columns: each
// column's place in a batch, the custom columns, and the rows each field
// skips (looked up once rather than by column name for every cell).
func batchLayout(f *pipeline.File) (colIdx map[string]int, customCols []string, skip [numFields]pipeline.RowSet) {
	colIdx = map[string]int{}
	for i, c := range f.Columns {
		colIdx[c.Name] = i + 1
		if c.Type == schemas.Custom {
			customCols = append(customCols, c.Name)
		}
	}
	for fi, name := range fieldCol {
		skip[fi] = f.Skip[name]
	}
	return colIdx, customCols, skip
}

// readBatch fills out with the rows of batch b, which starts at position
// base of the file, and returns what they read from the batch beyond that
// (its text columns, custom cells).
func readBatch(f *pipeline.File, b, base int, out []inRow, colIdx map[string]int, customCols []string, skip *[numFields]pipeline.RowSet) batchRows {
	rec := f.Batches[b]
	rows := rec.Column(0).(*array.Int32)
	var str [numFields]*array.String
	var dates [numFields]*array.Date32
	for fi, name := range fieldCol {
		ci, ok := colIdx[name]
		if !ok {
			continue
		}
		switch a := rec.Column(ci).(type) {
		case *array.String:
			str[fi] = a
		case *array.Date32:
			dates[fi] = a
		}
	}
	var cust []*array.String
	var cells []kv
	for _, name := range customCols {
		cust = append(cust, rec.Column(colIdx[name]).(*array.String))
	}
	n := int(rec.NumRows())
	for i := 0; i < n; i++ {
		pos := base + i
		r := &out[i]
		// Field by field into the zeroed slice: assigning a whole inRow
		// literal wrote all its bytes again, pointers included (with write
		// barriers while the collector runs), 1.6 s of a first load.
		r.pos, r.src, r.batch, r.idx = int32(pos), rows.Value(i), int32(b), int32(i)
		r.rejected, r.target = f.Rejected.Has(pos), -1
		for fi := 0; fi < numFields; fi++ {
			if str[fi] == nil && dates[fi] == nil {
				continue
			}
			if skip[fi].Has(pos) {
				continue
			}
			r.has |= 1 << fi
			if d := dates[fi]; d != nil && d.IsValid(i) {
				switch fi {
				case fStart:
					r.start, r.startOK = int32(d.Value(i)), true
				case fDeact:
					r.deact, r.deactOK = int32(d.Value(i)), true
				}
			}
		}
		r.custAt = int32(len(cells))
		for ci, a := range cust {
			if a.IsNull(i) || f.Skipped(customCols[ci], pos) {
				continue
			}
			cells = append(cells, kv{customCols[ci], a.Value(i)})
			r.custN++
		}
	}
	return batchRows{base: base, n: n, str: str, custom: cells}
}

// batchRows is what the rows of one batch read from it beyond inRow.
type batchRows struct {
	base, n int                      // the batch's rows are rows[base:base+n]
	str     [numFields]*array.String // the text column of each field
	custom  []kv                     // the rows' custom cells, in row order
}

// custom is row r's custom cells.
func (d *userDiff) custom(r *inRow) []kv {
	return d.cols[r.batch].custom[r.custAt : r.custAt+int32(r.custN)]
}
