package parse_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages"
)

// TestMaxRecordBytes: a CSV row or JSON object longer than max_record_bytes
// rejects the file as malformed_csv naming the row and the limit, however
// the record is made (one line, or a quoted value spanning lines), and a
// record of exactly the limit is read. Bad encoding after the long record
// still outranks it. (A 200 MB line through the whole pipeline, with its
// memory measured: stages/hostile_test.go.)
func TestMaxRecordBytes(t *testing.T) {
	const limit = 200
	spec, err := stages.Registry().Lookup("parse")
	if err != nil {
		t.Fatal(err)
	}
	opts := spec.Defaults()
	if opts["max_record_bytes"] != 1<<20 {
		t.Fatalf("default max_record_bytes %v, want 1 MiB", opts["max_record_bytes"])
	}
	opts["max_record_bytes"] = limit
	st, err := spec.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hdr := "email,first_name,last_name\n"
	row := func(n int) string { // a row of exactly n bytes with its "\n"
		prefix := "ada@example.com,Ada,"
		return prefix + strings.Repeat("x", n-len(prefix)-1) + "\n"
	}
	cases := []struct {
		name, file, body string
		code, contains   string // code "": accepted
	}{
		{"row of exactly the limit", "u.csv", hdr + row(limit), "", ""},
		{"row one byte over", "u.csv", hdr + row(limit) + row(limit+1), "malformed_csv", "row 3 is longer than 200 bytes"},
		{"header over", "u.csv", "email,first_name,last_name," + strings.Repeat("c", limit) + "\n" + row(50), "malformed_csv", "row 1 (the header) is longer than 200 bytes"},
		{"quoted value over many short lines", "u.csv", hdr + "ada@example.com,Ada,\"" + strings.Repeat("x\n", limit) + "\"\n", "malformed_csv", "row 2 is longer than 200 bytes"},
		{"far over: reading stops", "u.csv", hdr + row(50) + strings.Repeat("y", 10<<20) + "\n", "malformed_csv", "row 3 is longer than 200 bytes"},
		{"bad encoding after it still wins", "u.csv", hdr + row(limit+1) + row(50) + "\xff\n", "invalid_encoding", "line 4"},
		{"JSON object over", "u.json", `[{"email":"a@example.com","first_name":"A","last_name":"B"},{"email":"b@example.com","first_name":"` + strings.Repeat("x", limit) + `","last_name":"C"}]`, "malformed_csv", "object 2 of the JSON array is longer than 200 bytes"},
		{"JSON object far over", "u.json", `[{"email":"a@example.com","first_name":"` + strings.Repeat("x", 10<<20) + `"}]`, "malformed_csv", "object 1 of the JSON array is longer than 200 bytes"},
		{"minified JSON on one line is fine", "u.json", `[` + strings.Repeat(`{"email":"a@example.com","first_name":"A","last_name":"B"},`, 100) + `{"email":"z@example.com","first_name":"Z","last_name":"Z"}]`, "", ""},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.file)
			if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			f := &pipeline.File{Name: c.file, Staged: path, Plain: path}
			defer f.ReleaseBatches()
			_, err := st.(pipeline.Stage).Process(context.Background(), &pipeline.Run{Tenant: pipeline.NewTenant("t")}, f)
			var rej *pipeline.Rejection
			switch {
			case c.code == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.code == "":
			case !errors.As(err, &rej):
				t.Fatalf("got %v, want a %s rejection", err, c.code)
			case rej.Code != c.code || !strings.Contains(rej.Message, c.contains):
				t.Fatalf("got %s: %s; want %s saying %q", rej.Code, rej.Message, c.code, c.contains)
			}
		})
	}
}
