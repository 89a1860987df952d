package parse

import (
	"slices"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// batchCols accumulates the batch being built in Arrow's own layout: the
// source rows, and per text column its offsets, bytes and validity. The
// Arrow builders did the same through several calls and checks per value
// (~45 ns a cell, ~0.45 s of CPU for a million rows of ten columns);
// appending to Go slices is a few ns, and the slices become the record's
// buffers without a copy.
type batchCols struct {
	rows []int32
	text []textCol
	// bytes is the text of the batch so far: a batch is cut before any
	// column's offsets could pass what an int32 holds.
	bytes int
}

// textCol is one text column of a batch.
type textCol struct {
	offsets []int32 // one more than the values: offsets[i]..offsets[i+1] is value i
	data    []byte
	valid   []byte // validity bitmap, nil while every value is present
	nulls   int
}

// maxBatchBytes is the text a batch may hold: well under the 2 GiB that
// int32 offsets address, and a batch of rows at max_record_bytes stops
// here rather than there.
const maxBatchBytes = 1 << 30

// newBatchCols starts a batch with room for rows rows and, per column,
// textHint[c] bytes of text (none past the hints given).
func newBatchCols(cols, rows int, textHint []int) *batchCols {
	b := &batchCols{rows: make([]int32, 0, rows), text: make([]textCol, cols)}
	for c := range b.text {
		t := &b.text[c]
		t.offsets = make([]int32, 1, rows+1)
		if c < len(textHint) {
			t.data = make([]byte, 0, textHint[c])
		}
	}
	return b
}

// add appends value v to column c, or a null when present is false.
func (b *batchCols) add(c int, v string, present bool) {
	t := &b.text[c]
	if !present || t.valid != nil {
		t.mark(present)
	}
	if present {
		t.data = append(grow(t.data, len(v)), v...)
		b.bytes += len(v)
	}
	t.offsets = append(grow(t.offsets, 1), int32(len(t.data)))
}

// grow makes room for n more elements, doubling the capacity when it runs
// out: append grows large slices by a quarter, which for the first batch
// of a file (reserved for 4,096 rows, filled to batch_rows) copied the
// text ~15 times over.
func grow[S ~[]E, E any](s S, n int) S {
	if len(s)+n <= cap(s) {
		return s
	}
	return slices.Grow(s, max(n, cap(s)))
}

// mark records in the validity bitmap whether the value being added is
// present. The bitmap is made at the first null, every value before it
// present.
func (t *textCol) mark(present bool) {
	i := len(t.offsets) - 1
	if t.valid == nil {
		t.valid = make([]byte, 0, (cap(t.offsets)+7)/8)
		for k := 0; k < i/8; k++ {
			t.valid = append(t.valid, 0xff)
		}
		t.valid = append(t.valid, byte(1)<<(i%8)-1)
	}
	for len(t.valid) <= i/8 {
		t.valid = append(t.valid, 0)
	}
	if present {
		t.valid[i/8] |= 1 << (i % 8)
	} else {
		t.nulls++
	}
}

// record makes the batch an Arrow record of schema (the row column, then
// the text columns in order). The batch must not be used after.
func (b *batchCols) record(schema *arrow.Schema) arrow.Record {
	n := len(b.rows)
	cols := make([]arrow.Array, 0, 1+len(b.text))
	rowData := array.NewData(arrow.PrimitiveTypes.Int32, n,
		[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(b.rows))}, nil, 0, 0)
	cols = append(cols, array.NewInt32Data(rowData))
	rowData.Release()
	for c := range b.text {
		t := &b.text[c]
		var valid *memory.Buffer
		if t.nulls > 0 {
			valid = memory.NewBufferBytes(t.valid)
		}
		d := array.NewData(arrow.BinaryTypes.String, n,
			[]*memory.Buffer{valid, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(t.offsets)), memory.NewBufferBytes(t.data)}, nil, t.nulls, 0)
		cols = append(cols, array.NewStringData(d))
		d.Release()
	}
	rec := array.NewRecord(schema, cols, int64(n))
	for _, a := range cols {
		a.Release()
	}
	return rec
}
