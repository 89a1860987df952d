package parse

import (
	"fmt"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/schemas"
)

// TestBatchCols builds batches with nulls (JSON keys left out) at the
// edges of the validity bitmap's bytes, and reads every value back
// through Arrow.
func TestBatchCols(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: schemas.RowColumn, Type: arrow.PrimitiveTypes.Int32},
		{Name: "a", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "b", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	for _, c := range []struct {
		name string
		n    int
		null func(i int) bool // column a's nulls; b has none
	}{
		{"no nulls", 20, func(int) bool { return false }},
		{"first", 20, func(i int) bool { return i == 0 }},
		{"seventh", 20, func(i int) bool { return i == 7 }},
		{"eighth", 20, func(i int) bool { return i == 8 }},
		{"last of 17", 17, func(i int) bool { return i == 16 }},
		{"all", 19, func(int) bool { return true }},
		{"every third", 100, func(i int) bool { return i%3 == 0 }},
		{"past the rows reserved", 5000, func(i int) bool { return i == 4500 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBatchCols(2, 16, []int{4})
			for i := 0; i < c.n; i++ {
				b.rows = append(b.rows, int32(i+2))
				b.add(0, fmt.Sprintf("a%d", i), !c.null(i))
				b.add(1, fmt.Sprintf("b%d", i), true)
			}
			rec := b.record(schema)
			defer rec.Release()
			if rec.NumRows() != int64(c.n) {
				t.Fatalf("%d rows, want %d", rec.NumRows(), c.n)
			}
			rows := rec.Column(0).(*array.Int32)
			a, bcol := rec.Column(1).(*array.String), rec.Column(2).(*array.String)
			nulls := 0
			for i := 0; i < c.n; i++ {
				if rows.Value(i) != int32(i+2) {
					t.Fatalf("row %d: source row %d", i, rows.Value(i))
				}
				if c.null(i) {
					nulls++
					if !a.IsNull(i) {
						t.Fatalf("a[%d] = %q, want null", i, a.Value(i))
					}
				} else if a.IsNull(i) || a.Value(i) != fmt.Sprintf("a%d", i) {
					t.Fatalf("a[%d] = %q (null %v)", i, a.Value(i), a.IsNull(i))
				}
				if bcol.IsNull(i) || bcol.Value(i) != fmt.Sprintf("b%d", i) {
					t.Fatalf("b[%d] = %q (null %v)", i, bcol.Value(i), bcol.IsNull(i))
				}
			}
			if a.NullN() != nulls || bcol.NullN() != 0 {
				t.Fatalf("null counts %d and %d, want %d and 0", a.NullN(), bcol.NullN(), nulls)
			}
			if nulls > 0 && len(a.NullBitmapBytes()) < (c.n+7)/8 {
				t.Fatalf("validity bitmap of %d bytes for %d values", len(a.NullBitmapBytes()), c.n)
			}
		})
	}
}

// TestMaxRecordBytesBound: a record may not be larger than a batch's text
// may grow past its cut, or the int32 offsets would wrap.
func TestMaxRecordBytesBound(t *testing.T) {
	for _, c := range []struct {
		max int
		ok  bool
	}{{maxBatchBytes, true}, {maxBatchBytes + 1, false}, {1 << 40, false}} {
		o := Spec().Defaults()
		o[OptMaxRecordBytes] = c.max
		if _, err := Spec().New(o); (err == nil) != c.ok {
			t.Errorf("max_record_bytes %d: %v", c.max, err)
		}
	}
}
