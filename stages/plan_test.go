package stages_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages"
)

// TestPlanTakesTheFilesColumns: diff's plan is a record per batch of the
// file, and a batch whose rows are all new users taking their cells as the
// file has them passes its text columns on as the file's own arrays, not
// copies; a batch with a rejected row is built value by value, and every
// value is right either way.
func TestPlanTakesTheFilesColumns(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	tenant, err := pipeline.Tenants{DB: db}.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users.csv")
	body := "employee_id,email,first_name,last_name,title\n" +
		"1,a@example.com,Ann,Lee,Eng\n2,b@example.com,Bob,Ray,Eng\n3,c@example.com,Cy,Ode,Ops\n4,d@example.com,Di,Fox,Ops\n" +
		"5,E@Example.com,Ed,Poe,Ops\n6,not-an-email,Fay,Roe,Ops\n7,g@example.com,Gus,Sol,Ops\n8,h@example.com,Hal,Tor,Ops\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := stages.Registry().Lookup("parse")
	if err != nil {
		t.Fatal(err)
	}
	opts := spec.Defaults()
	opts["batch_rows"] = 4
	parse, err := spec.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	st := append([]pipeline.Stage{parse.(pipeline.Stage)}, benchStages(t, "normalize", "validate", "diff")...)
	run := &pipeline.Run{Tenant: tenant, DB: db, LogicalDate: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f := &pipeline.File{Name: "users.csv", Plain: path}
	runStages(t, run, f, st)

	if len(f.Batches) != 2 || len(f.Plan.Users) != 2 {
		t.Fatalf("%d batches, %d plan records: want a record per batch", len(f.Batches), len(f.Plan.Users))
	}
	fileCol := func(b int, name string) arrow.Array {
		i := slices.IndexFunc(f.Columns, func(c schemas.Column) bool { return c.Name == name })
		return f.Batches[b].Column(i + 1)
	}
	planCol := func(b int, name string) *array.String {
		idx := f.Plan.Users[b].Schema().FieldIndices(name)
		return f.Plan.Users[b].Column(idx[0]).(*array.String)
	}
	values := func(a *array.String) []string {
		var v []string
		for i := 0; i < a.Len(); i++ {
			v = append(v, a.Value(i))
		}
		return v
	}
	for _, name := range []string{"employee_id", "email", "first_name", "last_name", "title"} {
		if arrow.Array(planCol(0, name)) != fileCol(0, name) {
			t.Errorf("batch 1, %s: a copy, want the file's own array", name)
		}
		if arrow.Array(planCol(1, name)) == fileCol(1, name) {
			t.Errorf("batch 2, %s: the file's array, though a row of the batch was rejected", name)
		}
	}
	for _, c := range []struct {
		b    int
		name string
		want []string
	}{
		{0, "email", []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}},
		{0, "title", []string{"Eng", "Eng", "Ops", "Ops"}},
		{1, "email", []string{"e@example.com", "g@example.com", "h@example.com"}},
		{1, "first_name", []string{"Ed", "Gus", "Hal"}},
		{1, "action", []string{"create", "create", "create"}},
	} {
		if got := values(planCol(c.b, c.name)); !slices.Equal(got, c.want) {
			t.Errorf("batch %d, %s: %q, want %q", c.b+1, c.name, got, c.want)
		}
	}
}
