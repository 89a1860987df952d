// Package validate checks each typed row against the file template:
// required fields, length limits, e-mail syntax, and the duplicates inside
// the file. A row with an error in a required field is rejected whole; an
// error in an optional field drops only that field, and the row applies
// without it (FILE_RULES.md). Checks that need the current directory
// (managers, e-mails in use, seats) belong to diff.
package validate

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages/internal/hashpart"
	"github.com/zeebo/xxh3"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "validate",
		Summary: "Checks required fields, length limits and e-mail syntax, and rejects every row of a duplicate employee_id, email or department name.",
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

// dupCol finds, for one identity column, the values carried by more than
// one row. Most values are seen once, so the first row of each is kept in
// a table of plain ints (hashpart) and only clashes get a list (a list per
// value made a million-row file two million small allocations).
type dupCol struct {
	col, code, what string
	clash           map[string][]int32 // value → every 0-based row, when more than one
}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	var dups []*dupCol
	switch f.Kind {
	case schemas.KindUsers:
		dups = []*dupCol{
			{col: schemas.ColEmployeeID, code: schemas.CodeDuplicateEmployeeID, what: "employee_id"},
			{col: schemas.ColEmail, code: schemas.CodeDuplicateEmail, what: "email"},
		}
	case schemas.KindDepartments:
		dups = []*dupCol{{col: schemas.ColName, code: schemas.CodeDuplicateDepartment, what: "department name"}}
	}
	// src[pos] is the source row of the pos-th row; base[b] the position of
	// batch b's first row.
	src := make([]int32, 0, f.Rows)
	base := make([]int, len(f.Batches))
	for b, rec := range f.Batches {
		base[b] = len(src)
		src = append(src, rec.Column(0).(*array.Int32).Int32Values()...)
	}
	// The cell checks, batch by batch on every core. Each batch keeps its
	// findings in order and they are recorded after, batch by batch, so
	// the issues come out as one pass over batches, columns and rows gives
	// them.
	outs := make([]batchOut, len(f.Batches))
	pipeline.Parallel(len(f.Batches), 1, func(lo, hi int) {
		for b := lo; b < hi && ctx.Err() == nil; b++ {
			outs[b] = checkBatch(f, b, base[b], dups)
		}
	})
	if err := ctx.Err(); err != nil {
		return pipeline.Stats{}, fmt.Errorf("validate: %w", err)
	}
	for _, o := range outs {
		for _, fd := range o.found {
			f.Issues.Add(fd.issue)
			if fd.reject {
				f.Rejected.Add(int(fd.pos))
			} else {
				f.SkipField(fd.issue.Column, int(fd.pos))
			}
		}
	}
	// The duplicates, one identity column per core, in row order (the
	// first row of a value is kept, and every row of a clash in order).
	pipeline.Parallel(len(dups), 1, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			d := dups[k]
			d.clash = map[string][]int32{}
			ci := slices.IndexFunc(f.Columns, func(c schemas.Column) bool { return c.Name == d.col })
			if ci < 0 {
				continue
			}
			key := func(v string) string { return v }
			if f.Kind == schemas.KindDepartments {
				key = schemas.Key
			}
			// The column's value at a position, for the rare rows whose
			// value hashes like an earlier one.
			strs := make([]*array.String, len(f.Batches))
			for b, rec := range f.Batches {
				strs[b], _ = rec.Column(ci + 1).(*array.String)
			}
			at := func(pos int32) string {
				b := sort.Search(len(base), func(b int) bool { return base[b] > int(pos) }) - 1
				return key(strs[b].Value(int(pos) - base[b]))
			}
			// Each value's hash and position, in file order, then split
			// into cache-sized groups (hashpart): a value's rows all land
			// in one group, still in file order, so the first row seen of a
			// value is its first in the file.
			seed := rand.Uint64()
			keys := make([]hashpart.Entry, 0, len(src))
			for b, str := range strs {
				if str == nil {
					continue
				}
				skip := outs[b].noDup[k] // ascending: a cursor walks it
				for i := 0; i < str.Len(); i++ {
					pos := base[b] + i
					if len(skip) > 0 && int(skip[0]) == pos {
						skip = skip[1:]
						continue
					}
					if str.IsNull(i) {
						continue
					}
					if v := str.Value(i); v != "" {
						keys = append(keys, hashpart.Entry{Hash: xxh3.HashStringSeed(key(v), seed), Pos: int32(pos)})
					}
				}
			}
			grouped, ends := hashpart.Split(keys, hashpart.Bits(len(keys)))
			var tab hashpart.Table
			for g := range ends {
				group := hashpart.Group(grouped, ends, g)
				tab.Reset(len(group))
				for _, e := range group {
					p := tab.Add(e, func(p int32) bool { return at(p) == at(e.Pos) })
					if p == e.Pos {
						continue // the value's first row
					}
					switch kv := at(e.Pos); {
					case d.clash[kv] == nil:
						d.clash[kv] = []int32{p, e.Pos}
					default:
						d.clash[kv] = append(d.clash[kv], e.Pos)
					}
				}
			}
		}
	})
	for _, d := range dups {
		// In file order, not map order: past the issue limit only the
		// first details are kept, and the same file must keep the same.
		values := slices.Collect(maps.Keys(d.clash))
		slices.SortFunc(values, func(a, b string) int { return cmp.Compare(d.clash[a][0], d.clash[b][0]) })
		for _, v := range values {
			positions := d.clash[v]
			var srcRows []string
			for _, p := range positions {
				srcRows = append(srcRows, fmt.Sprint(src[p]))
			}
			for _, p := range positions {
				f.Issues.Add(pipeline.Issue{Row: int(src[p]), Column: d.col, Code: d.code, Severity: pipeline.SeverityError, Value: clip(v),
					Message: fmt.Sprintf("the %s %q appears on rows %s; roster cannot know which one is right, so none of them was applied", d.what, v, strings.Join(srcRows, ", "))})
				f.Rejected.Add(int(p))
			}
		}
	}
	accepted := 0
	for i := 0; i < f.Rows; i++ {
		if !f.Rejected.Has(i) {
			accepted++
		}
	}
	return pipeline.Stats{RowsIn: int64(f.Rows), RowsOut: int64(accepted)}, nil
}

// finding is one cell's error, recorded after the parallel checks.
type finding struct {
	issue  pipeline.Issue
	pos    int32
	reject bool // the row, else only the field
}

// batchOut is what checkBatch found in one batch.
type batchOut struct {
	found []finding
	// noDup[k]: positions, ascending, whose cell of duplicate column k
	// failed a check and so is not counted as a duplicate.
	noDup [2][]int32
}

// checkBatch checks every cell of batch b (its first row at position
// base) against its column's rules. It reads f and writes nothing shared:
// rows it rejects are tracked locally, so that a row already rejected by
// an earlier column reports no further required field, as in one pass.
func checkBatch(f *pipeline.File, b, base int, dups []*dupCol) batchOut {
	var out batchOut
	rec := f.Batches[b]
	rows := rec.Column(0).(*array.Int32)
	rejected := make([]bool, rec.NumRows())
	for ci, c := range f.Columns {
		str, ok := rec.Column(ci + 1).(*array.String)
		if !ok {
			continue
		}
		dk := slices.IndexFunc(dups, func(d *dupCol) bool { return d.col == c.Name })
		for i := 0; i < str.Len(); i++ {
			if str.IsNull(i) {
				continue
			}
			pos := base + i
			// A row already rejected reports one reason: its required
			// fields are not checked again. They still count for the
			// duplicate checks, so that whether two rows clash does not
			// depend on the order of the columns (a row rejected for
			// first_name still holds its email).
			quiet := (f.Rejected.Has(pos) || rejected[i]) && c.Required
			v := str.Value(i)
			code, msg := "", ""
			switch {
			case v == "" && c.Required:
				code, msg = c.RequiredCode, fmt.Sprintf("%s is required; the row was not applied", c.Name)
			case c.TooLong(v):
				code, msg = c.TooLongCode, fmt.Sprintf("%s is %d characters, over the limit of %d%s", c.Name, schemas.Len(v), c.MaxLen, consequence(c))
			case c.Name == schemas.ColEmail && !schemas.ValidEmail(v):
				code, msg = schemas.CodeEmailInvalid, fmt.Sprintf("%q is not a valid e-mail address (expected name@company.com); the row was not applied", v)
			default:
				continue
			}
			if dk >= 0 && v != "" {
				out.noDup[dk] = append(out.noDup[dk], int32(pos))
			}
			if quiet {
				continue
			}
			out.found = append(out.found, finding{pos: int32(pos), reject: c.Required, issue: pipeline.Issue{
				Row: int(rows.Value(i)), Column: c.Name, Code: code, Severity: pipeline.SeverityError, Message: msg, Value: clip(v)}})
			if c.Required {
				rejected[i] = true
			}
		}
	}
	return out
}

func consequence(c schemas.Column) string {
	if c.Required {
		return "; the row was not applied"
	}
	return " (the row was applied without this field)"
}

// clip keeps reported values readable: a 200 MB cell is not echoed back.
func clip(v string) string {
	const max = 200
	if len(v) <= max {
		return v
	}
	cut := max
	for cut > 0 && v[cut]&0xC0 == 0x80 {
		cut--
	}
	return v[:cut] + "…"
}
