package normalize

import (
	"slices"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// cell is one input cell: absent (a JSON key left out) or its text.
type cell struct {
	absent bool
	text   string
}

func TestTextColumns(t *testing.T) {
	v := func(s string) cell { return cell{text: s} }
	absent := cell{absent: true}
	email := schemas.Column{Name: schemas.ColEmail, Type: schemas.Email}
	eid := schemas.Column{Name: schemas.ColEmployeeID, Type: schemas.EmployeeID}
	title := schemas.Column{Name: schemas.ColTitle, Type: schemas.Text}
	tests := []struct {
		name string
		col  schemas.Column
		in   []cell
		want []string // "<absent>" for a null
		kept bool     // the input array is passed on as it is
	}{
		{"nothing to change", email, []cell{v("a@x.io"), absent, v("b@x.io")}, []string{"a@x.io", "<absent>", "b@x.io"}, true},
		{"the first cell changes", email, []cell{v(" A@X.io"), v("b@x.io")}, []string{"a@x.io", "b@x.io"}, false},
		{"a change after unchanged and absent cells", email,
			[]cell{v("a@x.io"), absent, v(""), v("b@x.io"), v("C@x.io "), absent, v("d@x.io")},
			[]string{"a@x.io", "<absent>", "", "b@x.io", "c@x.io", "<absent>", "d@x.io"}, false},
		{"only the last cell changes", eid, []cell{v("001"), v("002"), v("'003")}, []string{"001", "002", "003"}, false},
		{"every cell absent", title, []cell{absent, absent}, []string{"<absent>", "<absent>"}, true},
		{"trimmed text", title, []cell{v("Engineer"), v("  Manager\t")}, []string{"Engineer", "Manager"}, false},
		{"empty column", title, nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			b := array.NewStringBuilder(mem)
			rb := array.NewInt32Builder(mem)
			var wantSkips []int
			for i, c := range tc.in {
				rb.Append(int32(i + 2))
				if c.absent {
					b.AppendNull()
					wantSkips = append(wantSkips, 100+i)
				} else {
					b.Append(c.text)
				}
			}
			in, rows := b.NewStringArray(), rb.NewInt32Array()
			b.Release()
			rb.Release()
			var o batchOut
			out := column(mem, &pipeline.Run{Tenant: pipeline.NewTenant("t")}, &o, tc.col, in, rows, 100).(*array.String)
			var got []string
			for i := 0; i < out.Len(); i++ {
				if out.IsNull(i) {
					got = append(got, "<absent>")
				} else {
					got = append(got, out.Value(i))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("values: got %q, want %q", got, tc.want)
			}
			if kept := out == in; kept != tc.kept {
				t.Errorf("input array passed on: %v, want %v", kept, tc.kept)
			}
			var skips []int
			for _, s := range o.skips {
				if s.col != tc.col.Name {
					t.Errorf("skip recorded for %q, want %q", s.col, tc.col.Name)
				}
				skips = append(skips, s.pos)
			}
			if !slices.Equal(skips, wantSkips) {
				t.Errorf("skipped rows: got %v, want %v", skips, wantSkips)
			}
			out.Release()
			in.Release()
			rows.Release()
			mem.AssertSize(t, 0)
		})
	}
}
