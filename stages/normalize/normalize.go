// Package normalize turns parse's text batches into typed batches: trimmed
// text, lower-cased e-mails, employee ids without Excel's apostrophe, dates
// as Arrow DATE32 in ISO or the tenant's locale format, booleans.
//
// An absent cell (a JSON key missing from its object) means "leave the field
// as it is": it is recorded in File.Skip and becomes null. An empty cell
// means "clear the field". A value that cannot be read (invalid_date,
// invalid_value) is reported and skipped, so the row applies without it.
package normalize

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "normalize",
		Summary: "Types the text batches: trims, lower-cases e-mails, strips a leading apostrophe from ids, parses dates (ISO, or the tenant's MM/DD/YYYY or DD/MM/YYYY) and booleans.",
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

// ArrowType is the typed Arrow type of a template column.
func ArrowType(c schemas.Column) arrow.DataType {
	switch c.Type {
	case schemas.Date:
		return arrow.FixedWidthTypes.Date32
	case schemas.Bool:
		return arrow.FixedWidthTypes.Boolean
	}
	return arrow.BinaryTypes.String
}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	mem := run.Mem
	if mem == nil {
		mem = memory.NewGoAllocator()
	}
	fields := []arrow.Field{{Name: schemas.RowColumn, Type: arrow.PrimitiveTypes.Int32}}
	for _, c := range f.Columns {
		fields = append(fields, arrow.Field{Name: c.Name, Type: ArrowType(c), Nullable: true})
	}
	schema := arrow.NewSchema(fields, nil)
	// Batches are independent: they are normalized on every core, each
	// keeping its findings, which are then recorded batch by batch in file
	// order (the order one core gave).
	outs := make([]batchOut, len(f.Batches))
	base := make([]int, len(f.Batches)) // 0-based position of each batch's first row
	for i := 1; i < len(f.Batches); i++ {
		base[i] = base[i-1] + int(f.Batches[i-1].NumRows())
	}
	pipeline.Parallel(len(f.Batches), 1, func(lo, hi int) {
		for bi := lo; bi < hi && ctx.Err() == nil; bi++ {
			in, o := f.Batches[bi], &outs[bi]
			rows := array.NewInt32Data(in.Column(0).Data())
			cols := []arrow.Array{in.Column(0)}
			cols[0].Retain()
			for ci, c := range f.Columns {
				cols = append(cols, column(mem, run, o, c, in.Column(ci+1).(*array.String), rows, base[bi]))
			}
			rows.Release()
			o.rec = array.NewRecord(schema, cols, in.NumRows())
			for _, a := range cols {
				a.Release()
			}
		}
	})
	out := make([]arrow.Record, 0, len(outs))
	for _, o := range outs {
		if o.rec != nil {
			out = append(out, o.rec)
		}
	}
	if err := ctx.Err(); err != nil {
		for _, r := range out {
			r.Release()
		}
		return pipeline.Stats{}, err
	}
	for _, o := range outs {
		for _, is := range o.issues {
			f.Issues.Add(is)
		}
		for _, sk := range o.skips {
			f.SkipField(sk.col, sk.pos)
		}
	}
	for _, b := range f.Batches {
		b.Release()
	}
	f.Batches = out
	return pipeline.Stats{RowsIn: int64(f.Rows), RowsOut: int64(f.Rows)}, nil
}

// batchOut is one batch's result: its typed record and what was found.
type batchOut struct {
	rec    arrow.Record
	issues []pipeline.Issue
	skips  []skipped
}

// skipped is a row applied without one field.
type skipped struct {
	col string
	pos int
}

func (o *batchOut) SkipField(col string, pos int) { o.skips = append(o.skips, skipped{col, pos}) }

func column(mem memory.Allocator, run *pipeline.Run, o *batchOut, c schemas.Column, in *array.String, rows *array.Int32, base int) arrow.Array {
	n := in.Len()
	switch c.Type {
	case schemas.Date:
		b := array.NewDate32Builder(mem)
		defer b.Release()
		b.Reserve(n)
		for i := 0; i < n; i++ {
			if in.IsNull(i) {
				o.SkipField(c.Name, base+i)
				b.AppendNull()
				continue
			}
			v := strings.TrimSpace(in.Value(i))
			if v == "" {
				b.AppendNull()
				continue
			}
			t, ok := schemas.ParseDate(v, run.Tenant.DateFormat)
			if !ok {
				o.issues = append(o.issues, pipeline.Issue{Row: int(rows.Value(i)), Column: c.Name, Code: schemas.CodeInvalidDate, Severity: pipeline.SeverityError,
					Message: fmt.Sprintf("%q is not a date; write it as YYYY-MM-DD or %s with a four-digit year (the row was applied without this field)", v, run.Tenant.DateFormat),
					Value:   v})
				o.SkipField(c.Name, base+i)
				b.AppendNull()
				continue
			}
			b.Append(arrow.Date32FromTime(t))
		}
		return b.NewArray()
	case schemas.Bool:
		b := array.NewBooleanBuilder(mem)
		defer b.Release()
		for i := 0; i < n; i++ {
			if in.IsNull(i) {
				o.SkipField(c.Name, base+i)
				b.AppendNull()
				continue
			}
			v, ok := schemas.ParseBool(in.Value(i))
			if !ok {
				o.issues = append(o.issues, pipeline.Issue{Row: int(rows.Value(i)), Column: c.Name, Code: schemas.CodeInvalidValue, Severity: pipeline.SeverityError,
					Message: fmt.Sprintf("%q is not one of true/yes/1/x or false/no/0 (the row was applied without this field)", in.Value(i)),
					Value:   in.Value(i)})
				o.SkipField(c.Name, base+i)
				b.AppendNull()
				continue
			}
			b.Append(v)
		}
		return b.NewArray()
	}
	norm := strings.TrimSpace
	switch c.Type {
	case schemas.Email:
		norm = schemas.NormalizeEmail
	case schemas.EmployeeID:
		norm = schemas.NormalizeEmployeeID
	}
	// Most cells are already in their normal form: the column is kept as
	// it came until the first cell that changes, and only then copied. A
	// million-row file had normalize write a second copy of every text
	// column (~215 MB, which a VM charges again in system time).
	var b *array.StringBuilder
	for i := 0; i < n; i++ {
		if in.IsNull(i) {
			o.SkipField(c.Name, base+i)
			if b != nil {
				b.AppendNull()
			}
			continue
		}
		raw := in.Value(i)
		v := norm(raw)
		if b == nil {
			if v == raw {
				continue
			}
			b = array.NewStringBuilder(mem)
			defer b.Release()
			b.Reserve(n)
			b.ReserveData(len(in.ValueBytes()))
			for j := 0; j < i; j++ {
				if in.IsNull(j) {
					b.AppendNull()
				} else {
					b.Append(in.Value(j))
				}
			}
		}
		b.Append(v)
	}
	if b == nil {
		in.Retain()
		return in
	}
	return b.NewArray()
}
