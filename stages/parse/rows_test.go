package parse_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages"
)

// TestRowsAcrossChunks: the CSV decoder and the batch builder run on two
// goroutines and hand rows over in chunks of 1,024. Every row must still
// come out once, in file order, with its own values and spreadsheet row
// number, across chunk and batch boundaries that do not line up, with blank
// lines, values spanning lines, short rows and rows too long (rejected as
// malformed_row with their row number) scattered through the file.
func TestRowsAcrossChunks(t *testing.T) {
	type want struct {
		row                int
		email, first, last string
		malformed          bool
	}
	var b strings.Builder
	var wants []want
	b.WriteString("email,first_name,last_name\n")
	line := 2 // the line the next record starts on
	for i := 0; i < 5000; i++ {
		w := want{row: line, email: fmt.Sprintf("u%d@example.com", i), first: fmt.Sprintf("F%d", i), last: fmt.Sprintf("L%d", i)}
		switch {
		case i%997 == 3: // blank lines before the row count as rows
			b.WriteString("\n\n")
			line += 2
			w.row = line
			fmt.Fprintf(&b, "%s,%s,%s\n", w.email, w.first, w.last)
		case i%1013 == 7: // a value spanning three lines is one row (as a spreadsheet shows it)
			w.last = "line one\nline two\nline three"
			fmt.Fprintf(&b, "%s,%s,\"%s\"\n", w.email, w.first, w.last)
		case i%1021 == 11: // a short row: the missing value is empty
			w.last = ""
			fmt.Fprintf(&b, "%s,%s\n", w.email, w.first)
		case i%1031 == 13: // one value too many
			w.malformed = true
			fmt.Fprintf(&b, "%s,%s,%s,extra\n", w.email, w.first, w.last)
		default:
			fmt.Fprintf(&b, "%s,%s,%s\n", w.email, w.first, w.last)
		}
		line++
		wants = append(wants, w)
	}

	f := parseText(t, b.String(), 700)
	defer f.ReleaseBatches()
	if f.Rows != len(wants) {
		t.Fatalf("%d rows, want %d", f.Rows, len(wants))
	}
	pos := 0
	for _, rec := range f.Batches {
		rows := rec.Column(0).(*array.Int32)
		cols := map[string]*array.String{}
		for i, fld := range rec.Schema().Fields() {
			if s, ok := rec.Column(i).(*array.String); ok {
				cols[fld.Name] = s
			}
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			w := wants[pos]
			got := want{int(rows.Value(i)), cols["email"].Value(i), cols["first_name"].Value(i), cols["last_name"].Value(i), f.Rejected.Has(pos)}
			if got != w {
				t.Fatalf("row at position %d: got %+v, want %+v", pos, got, w)
			}
			pos++
		}
	}
	var malformed []int
	for _, is := range f.Issues.List() {
		if is.Code == schemas.CodeMalformedRow {
			malformed = append(malformed, is.Row)
		}
	}
	var wantMalformed []int
	for _, w := range wants {
		if w.malformed {
			wantMalformed = append(wantMalformed, w.row)
		}
	}
	if fmt.Sprint(malformed) != fmt.Sprint(wantMalformed) {
		t.Fatalf("malformed_row issues on rows %v, want %v", malformed, wantMalformed)
	}
}

// TestDamageStopsTheRows: damage that stops the decoder rejects the file as
// malformed_csv wherever it is, also on the first data row (where no row
// was read: that is not an empty file) and after several chunks.
func TestDamageStopsTheRows(t *testing.T) {
	rows := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "u%d@example.com,F,L\n", i)
		}
		return b.String()
	}
	hdr := "email,first_name,last_name\n"
	for _, c := range []struct {
		name, body, contains string
	}{
		{"on the first data row", hdr + "a@example.com,\"A,B\n", "line 2"},
		{"after several chunks", hdr + rows(3000) + "a@example.com,A\"x\",B\n", "line 3002"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := parseErr(t, c.body)
			var rej *pipeline.Rejection
			if !errors.As(err, &rej) || rej.Code != schemas.CodeMalformedCSV || !strings.Contains(rej.Message, c.contains) {
				t.Fatalf("got %v, want malformed_csv at %s", err, c.contains)
			}
		})
	}
}

func parseStage(t *testing.T, batchRows int) pipeline.Stage {
	t.Helper()
	spec, err := stages.Registry().Lookup("parse")
	if err != nil {
		t.Fatal(err)
	}
	opts := spec.Defaults()
	if batchRows > 0 {
		opts["batch_rows"] = batchRows
	}
	st, err := spec.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return st.(pipeline.Stage)
}

func parseFile(t *testing.T, body string, batchRows int) (*pipeline.File, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &pipeline.File{Name: "users.csv", Staged: path, Plain: path}
	_, err := parseStage(t, batchRows).Process(context.Background(), &pipeline.Run{Tenant: pipeline.NewTenant("t")}, f)
	return f, err
}

func parseText(t *testing.T, body string, batchRows int) *pipeline.File {
	t.Helper()
	f, err := parseFile(t, body, batchRows)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func parseErr(t *testing.T, body string) error {
	t.Helper()
	f, err := parseFile(t, body, 0)
	f.ReleaseBatches()
	return err
}
