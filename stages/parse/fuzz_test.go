package parse_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages"
)

// FuzzParseNormalizeValidate feeds arbitrary bytes, as CSV and as JSON,
// through parse, normalize and validate: every input ends in a file-level
// rejection with a known code or in batches whose rows and issues are
// consistent; nothing panics.
func FuzzParseNormalizeValidate(f *testing.F) {
	seeds, _ := filepath.Glob("../../fixtures/rules/*/*.csv")
	more, _ := filepath.Glob("../../fixtures/*.csv")
	for _, p := range append(seeds, more...) {
		if b, err := os.ReadFile(p); err == nil && len(b) < 64<<10 {
			f.Add(b, false)
		}
	}
	f.Add([]byte("email,first_name,last_name\nada@example.com,Ada,Lovelace\n"), false)
	f.Add([]byte(`[{"email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","start_date":"2026-01-02"}]`), true)
	f.Add([]byte("\xFF\xFEe\x00m\x00a\x00i\x00l\x00"), false)
	f.Add([]byte("name,parent,deactivate\nA,,x\nB,A,maybe\n"), false)
	reg := stages.Registry()
	var st []pipeline.Stage
	for _, name := range []string{"parse", "normalize", "validate"} {
		spec, err := reg.Lookup(name)
		if err != nil {
			f.Fatal(err)
		}
		s, err := spec.New(pipeline.Options{"batch_rows": 7, "max_fields": 50})
		if err != nil {
			f.Fatal(err)
		}
		st = append(st, s.(pipeline.Stage))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool) {
		name := "f.csv"
		if asJSON {
			name = "f.json"
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		tenant := pipeline.NewTenant("fuzz")
		tenant.CustomFields = []string{"cost_center"}
		run := &pipeline.Run{Tenant: tenant}
		file := &pipeline.File{Name: name, Staged: path, Plain: path}
		defer file.ReleaseBatches()
		for _, s := range st {
			_, err := s.Process(context.Background(), run, file)
			var rej *pipeline.Rejection
			if errors.As(err, &rej) {
				if rej.Code == "" || rej.Message == "" {
					t.Fatalf("rejection without code or message: %+v", rej)
				}
				return
			}
			if err != nil {
				t.Fatalf("system error on customer input: %v", err)
			}
		}
		n := 0
		for _, b := range file.Batches {
			n += int(b.NumRows())
		}
		if n != file.Rows {
			t.Fatalf("batches hold %d rows, the file says %d", n, file.Rows)
		}
		for _, is := range file.Issues.List() {
			if is.Code == "" || is.Row < 0 {
				t.Fatalf("bad issue %+v", is)
			}
		}
	})
}
