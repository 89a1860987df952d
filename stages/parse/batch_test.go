package parse

import (
	"fmt"
	"slices"
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

func TestScaleHints(t *testing.T) {
	for _, c := range []struct {
		name     string
		hint     []int
		from, to int
		want     []int
	}{
		{"first batch to a full one", []int{100, 300}, 4096, 65536, []int{1600, 4800}},
		{"same rows", []int{100, 300}, 65536, 65536, []int{100, 300}},
		{"the last batch was smaller", []int{1600, 4800}, 65536, 4096, []int{100, 300}},
		{"no batch before", nil, 0, 4096, nil},
		// A batch cut at maxBatchBytes after 2,048 rows of 512 KiB: the
		// next may have 65,536 rows, but never more text than the cut.
		{"cut by bytes", []int{maxBatchBytes + maxBatchBytes/8}, 2048, 65536, []int{maxBatchBytes}},
		{"cut by bytes, two columns", []int{maxBatchBytes / 2, maxBatchBytes / 2}, 2048, 65536, []int{maxBatchBytes / 2, maxBatchBytes / 2}},
	} {
		got := scaleHints(slices.Clone(c.hint), c.from, c.to)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		total := 0
		for _, h := range got {
			total += h
		}
		if total > maxBatchBytes {
			t.Errorf("%s: %d bytes reserved, more than a batch holds", c.name, total)
		}
	}
}

func TestScaleHintsHugeBatchRows(t *testing.T) {
	got := scaleHints([]int{maxBatchBytes / 4}, 1, 1<<50)
	if got[0] < 0 || got[0] > maxBatchBytes {
		t.Fatalf("batch_rows 2^50: %d bytes reserved", got[0])
	}
}
