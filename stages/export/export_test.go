package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
	"github.com/apache/arrow/go/v17/parquet/schema"
	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages/apply"
	"github.com/roster-hr/roster/stages/decrypt"
	"github.com/roster-hr/roster/stages/diff"
	"github.com/roster-hr/roster/stages/fetch"
	"github.com/roster-hr/roster/stages/normalize"
	"github.com/roster-hr/roster/stages/parse"
	"github.com/roster-hr/roster/stages/report"
	"github.com/roster-hr/roster/stages/validate"
)

var update = flag.Bool("update", false, "rewrite DICTIONARY.md")

// TestDictionary keeps DICTIONARY.md in step with the column declarations.
func TestDictionary(t *testing.T) {
	want := Dictionary()
	if *update {
		if err := os.WriteFile("DICTIONARY.md", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("DICTIONARY.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("DICTIONARY.md is stale: go test ./stages/export -run TestDictionary -update")
	}
	for _, tb := range allTables {
		for _, c := range tb.cols {
			if strings.TrimSpace(c.doc) == "" {
				t.Errorf("%s.%s has no meaning", tb.name, c.name)
			}
		}
	}
}

func date(s string) time.Time {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

const usersHeader = "employee_id,email,first_name,last_name,manager_email,department_name,title,location,start_date,deactivation_date\n"

// history is the story the tests export: four runs on four logical dates.
var history = []struct {
	date  string
	files map[string]string
}{
	{"2026-01-05", map[string]string{
		"departments.csv": "name,parent\nCompany,\nEngineering,Company\nSales,Company\n",
		"users.csv": usersHeader +
			"E1,alice@acme.test,Alice,Archer,,Company,CEO,Paris,2020-01-01,\n" +
			"E3,carol@acme.test,Carol,Chen,alice@acme.test,Engineering,Engineering Manager,Berlin,2019-06-01,\n" +
			"E2,bob@acme.test,Bob,Baker,carol@acme.test,Engineering,Engineer,Berlin,2021-03-01,\n" +
			// no start date: hired on the date roster first saw him.
			"E4,dave@acme.test,Dave,Diaz,carol@acme.test,Sales,=1+2,Remote,,\n",
	}},
	// A manager change (dave: carol → bob) and a department move (bob:
	// Engineering → Sales).
	{"2026-01-10", map[string]string{"users.csv": usersHeader +
		"E2,bob@acme.test,Bob,Baker,carol@acme.test,Sales,Engineer,Berlin,2021-03-01,\n" +
		"E4,dave@acme.test,Dave,Diaz,bob@acme.test,Sales,=1+2,Remote,,\n"}},
	// A back-dated deactivation.
	{"2026-01-15", map[string]string{"users.csv": usersHeader +
		"E4,dave@acme.test,Dave,Diaz,bob@acme.test,Sales,=1+2,Remote,,2026-01-14\n"}},
	// A rehire with a new start date.
	{"2026-01-20", map[string]string{"users.csv": usersHeader +
		"E4,dave@acme.test,Dave,Diaz,bob@acme.test,Sales,Account Executive,Remote,2026-01-20,\n"}},
}

type env struct {
	t   *testing.T
	db  *sqlx.DB
	dir string
	out string // where the pipeline's export stage writes
}

// newEnv runs the history through the real pipeline, export stage
// included, and returns the database.
func newEnv(t *testing.T) *env {
	t.Helper()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, dir: t.TempDir()}
	e.out = filepath.Join(e.dir, "export")
	rn := e.runner()
	for _, step := range history {
		var files []*pipeline.File
		names := make([]string, 0, len(step.files))
		for n := range step.files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			p := filepath.Join(e.dir, step.date+"-"+n)
			if err := os.WriteFile(p, []byte(step.files[n]), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, &pipeline.File{Name: n, Source: p})
		}
		res, err := rn.Run(ctx, pipeline.Request{Tenant: "acme", LogicalDate: date(step.date), Files: files})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != pipeline.RunSucceeded {
			for _, f := range res.Files {
				t.Logf("%s: %s %v %+v", f.Name, f.Status, f.Err, f.Issues.List())
			}
			t.Fatalf("run of %s: %s (%s)", step.date, res.Status, res.Reason)
		}
	}
	return e
}

func (e *env) runner() *pipeline.Runner {
	// The stages' registry imports this package, so this internal test
	// builds the same registry by hand.
	reg := pipeline.NewRegistry()
	for _, s := range []pipeline.Spec{fetch.Spec(), decrypt.Spec(), parse.Spec(), normalize.Spec(), validate.Spec(),
		diff.Spec(), apply.Spec(), report.Spec(), Spec()} {
		reg.Register(s)
	}
	// These tests check the stage's partitions after each run.
	spec := bytes.Replace(pipeline.DefaultSpec(), []byte("      when: nightly"), []byte("      when: run"), 1)
	return &pipeline.Runner{DB: e.db, Registry: reg, Spec: spec, StagingDir: filepath.Join(e.dir, "staging"),
		Log: slog.New(slog.DiscardHandler)}
}

func (e *env) export(ctx context.Context, day string, o Options) (Result, error) {
	e.t.Helper()
	return Export(ctx, e.db, "acme", date(day), o)
}

func (e *env) mustExport(day string, o Options) Result {
	e.t.Helper()
	res, err := e.export(context.Background(), day, o)
	if err != nil {
		e.t.Fatalf("export %s: %v", day, err)
	}
	return res
}

// row is one row read back, values as Go values (dates as YYYY-MM-DD).
type row map[string]any

// readParquet reads a partition's Parquet file with arrow's reader.
func readParquet(t *testing.T, out, table, day string) []row {
	t.Helper()
	path := filepath.Join(PartitionDir(out, table, "acme", date(day)), "part-0.parquet")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := pqarrow.ReadTable(context.Background(), f, nil, pqarrow.ArrowReadProperties{}, memory.NewGoAllocator())
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	defer tbl.Release()
	var rows []row
	tr := array.NewTableReader(tbl, 1024)
	defer tr.Release()
	for tr.Next() {
		rec := tr.Record()
		for i := 0; i < int(rec.NumRows()); i++ {
			r := row{}
			for c, fld := range rec.Schema().Fields() {
				r[fld.Name] = value(rec.Column(c), i)
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func value(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(i)
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly)
	case *array.Timestamp:
		return a.Value(i).ToTime(arrow.Microsecond)
	case *array.Int64:
		return a.Value(i)
	case *array.Int32:
		return a.Value(i)
	case *array.Boolean:
		return a.Value(i)
	}
	return a.ValueStr(i)
}

// pick projects rows on some columns, as "a|b|c" strings (nil as ∅),
// sorted.
func pick(rows []row, cols ...string) []string {
	var out []string
	for _, r := range rows {
		var parts []string
		for _, c := range cols {
			v := r[c]
			if v == nil {
				parts = append(parts, "∅")
			} else {
				parts = append(parts, fmt.Sprint(v))
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	sort.Strings(out)
	return out
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// TestExportHistory exports the dates of a history of runs and checks
// each partition against what happened.
func TestExportHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := filepath.Join(e.dir, "cli")
	for _, d := range []string{"2026-01-01", "2026-01-05", "2026-01-10", "2026-01-12", "2026-01-15", "2026-01-20"} {
		e.mustExport(d, Options{Out: out})
	}
	snapCols := []string{"employee_id", "manager_employee_id", "department_name", "department_path", "active", "start_date", "deactivation_date"}

	// Before the first run: every table exists, empty.
	for _, tb := range allTables {
		if rows := readParquet(t, out, tb.name, "2026-01-01"); len(rows) != 0 {
			t.Errorf("%s on 2026-01-01: %d rows, want none", tb.name, len(rows))
		}
	}

	same(t, "snapshot 2026-01-05", pick(readParquet(t, out, TableSnapshot, "2026-01-05"), snapCols...), []string{
		"E1|∅|Company|Company|true|2020-01-01|∅",
		"E2|E3|Engineering|Company > Engineering|true|2021-03-01|∅",
		"E3|E1|Engineering|Company > Engineering|true|2019-06-01|∅",
		"E4|E3|Sales|Company > Sales|true|∅|∅",
	})
	after := []string{
		"E1|∅|Company|Company|true|2020-01-01|∅",
		"E2|E3|Sales|Company > Sales|true|2021-03-01|∅",
		"E3|E1|Engineering|Company > Engineering|true|2019-06-01|∅",
		"E4|E2|Sales|Company > Sales|true|∅|∅",
	}
	same(t, "snapshot 2026-01-10", pick(readParquet(t, out, TableSnapshot, "2026-01-10"), snapCols...), after)
	// A date without runs is rebuilt as the runs before it left it.
	same(t, "snapshot 2026-01-12", pick(readParquet(t, out, TableSnapshot, "2026-01-12"), snapCols...), after)
	same(t, "snapshot 2026-01-15", pick(readParquet(t, out, TableSnapshot, "2026-01-15"), snapCols...), []string{
		"E1|∅|Company|Company|true|2020-01-01|∅",
		"E2|E3|Sales|Company > Sales|true|2021-03-01|∅",
		"E3|E1|Engineering|Company > Engineering|true|2019-06-01|∅",
		"E4|E2|Sales|Company > Sales|false|∅|2026-01-14",
	})
	snap20 := readParquet(t, out, TableSnapshot, "2026-01-20")
	same(t, "snapshot 2026-01-20", pick(snap20, snapCols...), []string{
		"E1|∅|Company|Company|true|2020-01-01|∅",
		"E2|E3|Sales|Company > Sales|true|2021-03-01|∅",
		"E3|E1|Engineering|Company > Engineering|true|2019-06-01|∅",
		"E4|E2|Sales|Company > Sales|true|2026-01-20|∅",
	})
	// Every row carries the tenant, the date, the run that last changed it
	// and when that run recorded it.
	runs := e.runIDs()
	same(t, "snapshot 2026-01-20 provenance", pick(snap20, "employee_id", "tenant_code", "snapshot_date", "run_id", "manager_email", "title"), []string{
		fmt.Sprintf("E1|acme|2026-01-20|%d|∅|CEO", runs["2026-01-05"]),
		fmt.Sprintf("E2|acme|2026-01-20|%d|carol@acme.test|Engineer", runs["2026-01-10"]),
		fmt.Sprintf("E3|acme|2026-01-20|%d|alice@acme.test|Engineering Manager", runs["2026-01-05"]),
		fmt.Sprintf("E4|acme|2026-01-20|%d|bob@acme.test|Account Executive", runs["2026-01-20"]),
	})
	for _, r := range snap20 {
		if ts, ok := r["load_timestamp"].(time.Time); !ok || ts.IsZero() || r["custom_fields"] != "{}" {
			t.Errorf("snapshot row %v: load_timestamp %v custom_fields %v", r["employee_id"], r["load_timestamp"], r["custom_fields"])
		}
	}

	// Events keep their own dates; a first load hires everyone.
	evCols := []string{"event_date", "event_type", "employee_id", "old_value", "new_value"}
	same(t, "events 2026-01-05", pick(readParquet(t, out, TableEvents, "2026-01-05"), evCols...), []string{
		"2020-01-01|hire|E1|∅|true",
		"2019-06-01|hire|E3|∅|true",
		"2021-03-01|hire|E2|∅|true",
		"2026-01-05|hire|E4|∅|true", // no start date: the date first seen
	})
	same(t, "events 2026-01-10", pick(readParquet(t, out, TableEvents, "2026-01-10"), evCols...), []string{
		"2026-01-10|department_change|E2|Engineering|Sales",
		"2026-01-10|manager_change|E4|E3|E2",
	})
	if rows := readParquet(t, out, TableEvents, "2026-01-12"); len(rows) != 0 {
		t.Errorf("events 2026-01-12 (no runs): %v", rows)
	}
	same(t, "events 2026-01-15", pick(readParquet(t, out, TableEvents, "2026-01-15"), evCols...), []string{
		"2026-01-14|termination|E4|true|false", // back-dated: its own date
	})
	same(t, "events 2026-01-20", pick(readParquet(t, out, TableEvents, "2026-01-20"), evCols...), []string{
		"2026-01-20|rehire|E4|false|true",
		"2026-01-20|title_change|E4|=1+2|Account Executive",
	})
	// Hires and terminations balance over all partitions.
	var all []row
	for _, d := range []string{"2026-01-05", "2026-01-10", "2026-01-15", "2026-01-20"} {
		all = append(all, readParquet(t, out, TableEvents, d)...)
		for _, r := range readParquet(t, out, TableEvents, d) {
			if r["run_id"] != runs[d] || r["tenant_code"] != "acme" {
				t.Errorf("event %v of %s: run %v, want %d", r, d, r["run_id"], runs[d])
			}
		}
	}
	checkBalanced(t, all)

	// Profile history: one row per state the date's runs recorded.
	profCols := []string{"employee_id", "effective_start", "effective_end", "active", "change_action", "changed_fields"}
	same(t, "profile 2026-01-10", pick(readParquet(t, out, TableProfile, "2026-01-10"), profCols...), []string{
		"E2|2026-01-10|∅|true|update|department",
		"E4|2026-01-10|∅|true|update|manager_id",
	})
	same(t, "profile 2026-01-15", pick(readParquet(t, out, TableProfile, "2026-01-15"), profCols...), []string{
		"E4|2026-01-14|∅|false|deactivate|active,deactivation_date",
	})
	same(t, "profile 2026-01-20", pick(readParquet(t, out, TableProfile, "2026-01-20"), append(profCols, "title", "start_date", "manager_employee_id", "department_path")...), []string{
		"E4|2026-01-20|∅|true|reactivate|active,deactivation_date,start_date,title|Account Executive|2026-01-20|E2|Company > Sales",
	})
	if n := len(readParquet(t, out, TableProfile, "2026-01-05")); n != 4 {
		t.Errorf("profile 2026-01-05: %d rows, want 4", n)
	}

	// Departments as of each date, with their heads.
	deptCols := []string{"department_name", "parent_department_name", "level", "department_path", "active", "head_employee_id", "active_headcount"}
	same(t, "departments 2026-01-05", pick(readParquet(t, out, TableDepartment, "2026-01-05"), deptCols...), []string{
		"Company|∅|1|Company|true|E1|1",
		"Engineering|Company|2|Company > Engineering|true|E3|2", // carol manages bob
		"Sales|Company|2|Company > Sales|true|E4|1",
	})
	same(t, "departments 2026-01-10", pick(readParquet(t, out, TableDepartment, "2026-01-10"), deptCols...), []string{
		"Company|∅|1|Company|true|E1|1",
		"Engineering|Company|2|Company > Engineering|true|E3|1",
		"Sales|Company|2|Company > Sales|true|E2|2", // bob now manages dave
	})
	same(t, "departments 2026-01-15", pick(readParquet(t, out, TableDepartment, "2026-01-15"), deptCols...), []string{
		"Company|∅|1|Company|true|E1|1",
		"Engineering|Company|2|Company > Engineering|true|E3|1",
		"Sales|Company|2|Company > Sales|true|E2|1", // dave left
	})

	// The pipeline's export stage wrote the same partitions, byte for byte,
	// for the dates it ran.
	for _, d := range []string{"2026-01-05", "2026-01-10", "2026-01-15", "2026-01-20"} {
		for _, tb := range allTables {
			a := readFile(t, filepath.Join(PartitionDir(out, tb.name, "acme", date(d)), "part-0.parquet"))
			b := readFile(t, filepath.Join(PartitionDir(e.out, tb.name, "acme", date(d)), "part-0.parquet"))
			if !bytes.Equal(a, b) {
				t.Errorf("%s %s: the stage's partition differs from the CLI's", tb.name, d)
			}
		}
	}
}

// checkBalanced checks that, per user, terminations and hires alternate:
// every termination follows a hire or rehire, not earlier in date.
func checkBalanced(t *testing.T, events []row) {
	t.Helper()
	// Recording order: by run, a creation (no history row) before changes.
	hid := func(ev row) int64 {
		if id, ok := ev["history_id"].(int64); ok {
			return id
		}
		return 0
	}
	sort.SliceStable(events, func(a, b int) bool {
		ra, rb := events[a]["run_id"].(int64), events[b]["run_id"].(int64)
		if ra != rb {
			return ra < rb
		}
		return hid(events[a]) < hid(events[b])
	})
	employed := map[int64]string{} // user → date of the open hire
	hires, terms := 0, 0
	for _, ev := range events {
		u := ev["user_id"].(int64)
		switch ev["event_type"] {
		case EventHire, EventRehire:
			if _, open := employed[u]; open {
				t.Errorf("user %d hired twice without termination", u)
			}
			employed[u] = ev["event_date"].(string)
			hires++
		case EventTermination:
			h, open := employed[u]
			if !open {
				t.Errorf("user %d terminated without a hire", u)
			} else if ev["event_date"].(string) < h {
				t.Errorf("user %d terminated %v before the hire %s", u, ev["event_date"], h)
			}
			delete(employed, u)
			terms++
		}
	}
	if hires == 0 || terms == 0 {
		t.Errorf("history should have hires and terminations: %d, %d", hires, terms)
	}
}

func (e *env) runIDs() map[string]int64 {
	e.t.Helper()
	var rows []struct {
		ID   int64  `db:"id"`
		Date string `db:"d"`
	}
	if err := e.db.Select(&rows, `SELECT id, to_char(logical_date, 'YYYY-MM-DD') AS d FROM runs`); err != nil {
		e.t.Fatal(err)
	}
	m := map[string]int64{}
	for _, r := range rows {
		m[r.Date] = r.ID
	}
	return m
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshotDir reads every file of a partition.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, en := range entries {
		m[en.Name()] = string(readFile(t, filepath.Join(dir, en.Name())))
	}
	return m
}

func snapshotTree(t *testing.T, out, day string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, tb := range allTables {
		m[tb.name] = snapshotDir(t, PartitionDir(out, tb.name, "acme", date(day)))
	}
	return m
}

// TestReexportIdempotent exports a date twice (and into a fresh
// directory): the files are byte-identical, and the manifest matches them.
func TestReexportIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := filepath.Join(e.dir, "a")
	first := e.mustExport("2026-01-10", Options{Out: out})
	before := snapshotTree(t, out, "2026-01-10")
	second := e.mustExport("2026-01-10", Options{Out: out})
	if after := snapshotTree(t, out, "2026-01-10"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("re-exporting changed the partition")
	}
	other := filepath.Join(e.dir, "b")
	e.mustExport("2026-01-10", Options{Out: other})
	if fmt.Sprint(snapshotTree(t, other, "2026-01-10")) != fmt.Sprint(before) {
		t.Error("an export into another directory differs")
	}
	if fmt.Sprint(first.Tables) != fmt.Sprint(second.Tables) {
		t.Errorf("results differ: %v vs %v", first.Tables, second.Tables)
	}
	for _, tr := range first.Tables {
		var m Manifest
		if err := json.Unmarshal(readFile(t, filepath.Join(tr.Dir, manifestName)), &m); err != nil {
			t.Fatal(err)
		}
		data := readFile(t, filepath.Join(tr.Dir, tr.File))
		if len(m.Files) != 1 || m.Files[0].Name != "part-0.parquet" || m.Files[0].SHA256 != sha(data) ||
			m.Files[0].Bytes != int64(len(data)) || m.Rows != tr.Rows || m.SchemaVersion != SchemaVersion ||
			m.Table != tr.Table || m.Tenant != "acme" || m.Date != "2026-01-10" || len(m.Columns) == 0 {
			t.Errorf("manifest of %s: %+v", tr.Table, m)
		}
		if tr.Table == TableEvents && fmt.Sprint(m.SourceRuns) != fmt.Sprint([]int64{e.runIDs()["2026-01-10"]}) {
			t.Errorf("events source runs %v", m.SourceRuns)
		}
	}
}

// failingWriter fails once more than n bytes were written.
type failingWriter struct {
	w io.Writer
	n int
}

var errDiskFull = errors.New("disk full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		f.n = 0
		return 0, errDiskFull
	}
	f.n -= len(p)
	return f.w.Write(p)
}

// TestInterruptedExportKeepsPartition: an export whose writer fails, or
// whose context is cancelled mid-write, leaves the previous partitions
// exactly as they were, and no temporary files behind.
func TestInterruptedExportKeepsPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := filepath.Join(e.dir, "out")
	e.mustExport("2026-01-10", Options{Out: out})
	before := snapshotTree(t, out, "2026-01-10")
	check := func(what string) {
		t.Helper()
		if after := snapshotTree(t, out, "2026-01-10"); fmt.Sprint(after) != fmt.Sprint(before) {
			for tb, files := range after {
				for n := range files {
					t.Logf("%s: %s", tb, n)
				}
			}
			t.Errorf("%s: the partition changed", what)
		}
	}

	// The third table's writer fails (after the first two were written).
	o := Options{Out: out, RowGroupRows: 1}
	o.wrap = func(table string, w io.Writer) io.Writer {
		if table == TableEvents {
			return &failingWriter{w: w, n: 100}
		}
		return w
	}
	if _, err := e.export(context.Background(), "2026-01-10", o); !errors.Is(err, errDiskFull) {
		t.Fatalf("failing writer: err %v", err)
	}
	check("failing writer")

	// The writer fails in the Parquet footer, which the Parquet library
	// does not report by itself.
	o = Options{Out: out}
	o.wrap = func(table string, w io.Writer) io.Writer {
		if table == TableDepartment {
			return &failingWriter{w: w, n: 4} // the magic number only
		}
		return w
	}
	if _, err := e.export(context.Background(), "2026-01-10", o); !errors.Is(err, errDiskFull) {
		t.Fatalf("failing footer: err %v", err)
	}
	check("failing footer")

	// The context is cancelled while the profile table is being written.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o.wrap = func(table string, w io.Writer) io.Writer {
		if table == TableProfile {
			cancel()
		}
		return w
	}
	if _, err := e.export(ctx, "2026-01-10", o); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err %v", err)
	}
	check("cancelled")

	// And a good export afterwards replaces it normally.
	e.mustExport("2026-01-10", Options{Out: out})
	check("re-export")
}

// TestParquetTypes checks the Parquet logical types and that small row
// groups split the data.
func TestParquetTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := filepath.Join(e.dir, "out")
	e.mustExport("2026-01-20", Options{Out: out, RowGroupRows: 3, Compression: CompressionSnappy})
	path := filepath.Join(PartitionDir(out, TableSnapshot, "acme", date("2026-01-20")), "part-0.parquet")
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.NumRowGroups() != 2 || r.NumRows() != 4 {
		t.Errorf("row groups %d rows %d, want 2 and 4", r.NumRowGroups(), r.NumRows())
	}
	sc := r.MetaData().Schema
	types := map[string]string{}
	for i := 0; i < sc.NumColumns(); i++ {
		types[sc.Column(i).Name()] = sc.Column(i).LogicalType().String()
	}
	if !sc.Column(sc.ColumnIndexByName("start_date")).LogicalType().Equals(schema.DateLogicalType{}) {
		t.Errorf("start_date: %s", types["start_date"])
	}
	ts, ok := sc.Column(sc.ColumnIndexByName("load_timestamp")).LogicalType().(*schema.TimestampLogicalType)
	if !ok || !ts.IsAdjustedToUTC() || ts.TimeUnit() != schema.TimeUnitMicros {
		t.Errorf("load_timestamp: %s", types["load_timestamp"])
	}
	if !sc.Column(sc.ColumnIndexByName("email")).LogicalType().Equals(schema.StringLogicalType{}) {
		t.Errorf("email: %s", types["email"])
	}
	if c, err := r.MetaData().RowGroup(0).ColumnChunk(0); err != nil || c.Compression().String() != "SNAPPY" {
		t.Errorf("compression: %v", err)
	}
}

// TestCSV checks the CSV format: names, RFC 4180, every field quoted,
// formulas neutralised, and the same rows as Parquet.
func TestCSV(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := filepath.Join(e.dir, "out")
	pq := e.mustExport("2026-01-10", Options{Out: out})
	res := e.mustExport("2026-01-10", Options{Out: out, Format: FormatCSV})
	names := map[string]string{}
	for _, tr := range res.Tables {
		names[tr.Table] = tr.File
	}
	want := map[string]string{
		TableSnapshot: "ACME_EmployeeSnapshot_20260110.csv", TableProfile: "ACME_EmployeeProfileHistory_20260110.csv",
		TableEvents: "ACME_EmployeeEvents_20260110.csv", TableDepartment: "ACME_DepartmentHierarchy_20260110.csv",
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("names %v", names)
	}
	dir := PartitionDir(out, TableSnapshot, "acme", date("2026-01-10"))
	// The CSV export replaced the Parquet partition.
	if files := snapshotDir(t, dir); len(files) != 2 || files[manifestName] == "" || files[want[TableSnapshot]] == "" {
		t.Errorf("partition files: %v", keys(files))
	}
	body := readFile(t, filepath.Join(dir, want[TableSnapshot]))
	lines := strings.Split(strings.TrimSuffix(string(body), "\r\n"), "\r\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want a header and 4 rows:\n%s", len(lines), body)
	}
	if !strings.HasPrefix(lines[0], `"tenant_code","snapshot_date","user_id","employee_id",`) {
		t.Errorf("header %s", lines[0])
	}
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if n := strings.Count(l, `","`); n != len(snapshotTable.cols)-1 || l[0] != '"' || l[len(l)-1] != '"' {
			t.Errorf("not every field quoted: %s", l)
		}
	}
	var dave []string
	for _, r := range recs {
		if r[3] == "E4" {
			dave = r
		}
	}
	col := func(name string) int {
		for i, c := range snapshotTable.cols {
			if c.name == name {
				return i
			}
		}
		t.Fatalf("no column %s", name)
		return -1
	}
	if dave[col("title")] != `'=1+2` || dave[col("start_date")] != "" || dave[col("active")] != "true" ||
		dave[col("snapshot_date")] != "2026-01-10" || !strings.HasSuffix(dave[col("load_timestamp")], "Z") {
		t.Errorf("dave: %q", dave)
	}
	if len(recs)-1 != int(pq.Tables[0].Rows) {
		t.Errorf("csv rows %d, parquet %d", len(recs)-1, pq.Tables[0].Rows)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestStageSkips: no export in a dry run or for a tenant with export off.
func TestStageSkips(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	tn := pipeline.NewTenant("acme")
	if err := (pipeline.Tenants{DB: db}).Put(ctx, tn); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, dir: t.TempDir()}
	e.out = filepath.Join(e.dir, "export")
	p := filepath.Join(e.dir, "users.csv")
	if err := os.WriteFile(p, []byte(history[0].files["users.csv"]), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(dry bool) {
		res, err := e.runner().Run(ctx, pipeline.Request{Tenant: "acme", LogicalDate: date("2026-01-05"), DryRun: dry,
			Files: []*pipeline.File{{Name: "users.csv", Source: p}}})
		if err != nil || res.Status != pipeline.RunSucceeded {
			t.Fatalf("run: %v %+v", err, res)
		}
	}
	run(true)
	if _, err := os.Stat(e.out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run exported: %v", err)
	}
	tn.ExportEnabled = false
	if err := (pipeline.Tenants{DB: db}).Put(ctx, tn); err != nil {
		t.Fatal(err)
	}
	run(false)
	if _, err := os.Stat(e.out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("export disabled but exported: %v", err)
	}
}

func TestNeutralize(t *testing.T) {
	for in, want := range map[string]string{"=1+1": "'=1+1", "+1": "'+1", "-1": "'-1", "@x": "'@x", "\tx": "'\tx",
		"\rx": "'\rx", "plain": "plain", "": "", "a=b": "a=b"} {
		if got := Neutralize(in); got != want {
			t.Errorf("Neutralize(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDeriveEvents covers the cases the history above does not: a user who
// arrives already deactivated, and terminations dated before the hire.
func TestDeriveEvents(t *testing.T) {
	d := func(s string) *day { v := toDay(date(s)); return &v }
	show := func(evs []event) string {
		var out []string
		for _, e := range evs {
			out = append(out, fmt.Sprintf("%s %s", time.Unix(int64(e.date)*86400, 0).UTC().Format(time.DateOnly), e.typ))
		}
		return strings.Join(out, ", ")
	}
	for _, c := range []struct {
		name string
		u    user
		ch   map[string]change
		want string
	}{
		{"arrives deactivated", user{action: "create", effDate: d("2026-01-05"), start: d("2025-01-01"), deact: d("2025-06-30")}, nil,
			"2025-01-01 hire, 2025-06-30 termination"},
		{"arrives deactivated before its start", user{action: "create", effDate: d("2026-01-05"), start: d("2025-07-01"), deact: d("2025-06-30")}, nil,
			"2025-07-01 hire, 2025-07-01 termination"},
		{"arrives deactivated, no dates", user{action: "create", effDate: d("2026-01-05")}, nil,
			"2026-01-05 hire, 2026-01-05 termination"},
		{"future hire cancelled", user{action: "deactivate", effDate: d("2026-01-05"), prevStart: d("2026-02-01")},
			map[string]change{"active": {Old: json.RawMessage("true"), New: json.RawMessage("false")}},
			"2026-02-01 termination"},
		{"back-dated before first seen", user{action: "deactivate", effDate: d("2026-01-01"), firstSeen: d("2026-01-03")},
			map[string]change{"active": {Old: json.RawMessage("true"), New: json.RawMessage("false")}, "title": {Old: json.RawMessage(`"a"`), New: json.RawMessage(`"b"`)}},
			"2026-01-01 title_change, 2026-01-03 termination"},
		{"rehire without a new start", user{action: "reactivate", effDate: d("2026-01-09"), start: d("2020-01-01")},
			map[string]change{"active": {Old: json.RawMessage("false"), New: json.RawMessage("true")}},
			"2026-01-09 rehire"},
		{"schedule: no event", user{action: "schedule", effDate: d("2026-01-09"), active: true},
			map[string]change{"deactivation_date": {New: json.RawMessage(`"2026-03-01"`)}}, ""},
	} {
		u := c.u
		if u.action == "create" || u.action == "schedule" {
			u.active = u.action == "schedule"
		}
		if got := show(deriveEvents(&u, c.ch)); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestStateFieldsMatchTheSchema: the export projects the fields the
// schema's roster_user_fields knows (and apply records changes of), no
// more, no fewer.
func TestStateFieldsMatchTheSchema(t *testing.T) {
	db, _ := pgtest.New(t)
	var ours []string
	for _, f := range stateFields {
		ours = append(ours, f.name)
	}
	pgtest.CheckHistoryFields(t, db, "the export's state fields", ours)
}
