package stages_test

// TestRules runs every case of fixtures/rules against real PostgreSQL: each
// case is a directory of small real files and the outcome FILE_RULES.md
// promises for them (see fixtures/rules/README.md for the layout). One
// database serves every case; each case is its own tenant, so cases run in
// parallel and never see each other.

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/apply"
	"github.com/roster-hr/roster/stages/diff"
	"gopkg.in/yaml.v3"
)

const rulesDir = "../fixtures/rules"

// quiet keeps the runs' logs out of the test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// defaultDate is every case's logical date unless tenant.yaml or a step
// says otherwise: a fixed "today", so fixtures can name past and future
// dates.
const defaultDate = "2026-03-02"

// tenantYAML is a case's tenant.yaml: the tenant's settings.
type tenantYAML struct {
	Seats               *int64   `yaml:"seats"`
	Omitted             string   `yaml:"omitted"`
	DateFormat          string   `yaml:"date_format"`
	Timezone            string   `yaml:"timezone"`
	Delimiter           string   `yaml:"delimiter"`
	MassDeactivationPct *float64 `yaml:"mass_deactivation_pct"`
	CustomFields        []string `yaml:"custom_fields"`
	MaxFileBytes        int64    `yaml:"max_file_bytes"`
	RequireEncryption   bool     `yaml:"require_encryption"`
	// PGPKey is the path (relative to the case) of the tenant's stored,
	// passphrase-protected private key; the test unlocks it with
	// pgpPassphrase.
	PGPKey string `yaml:"pgp_key"`
	// Date is the logical date of the case's runs (default defaultDate).
	Date string `yaml:"date"`
}

// smallBatches makes parse cut every file under test into batches of 3
// rows, so that every case also checks that rows, rejections and skipped
// fields keep their place across batch boundaries.
var smallBatches = map[string]pipeline.Options{"parse": {"batch_rows": 3}}

// The two ways diff can decide a file (stages/diff/digest.go): every case
// runs both, and must meet its expectations and end in the same directory
// both ways. incrementalAlways takes the incremental path whatever share
// of the rows is left to decide (the default would read every user of
// these small tenants); fullDiff reads and compares every user.
var (
	incrementalAlways = pipeline.Options{diff.OptIncrementalMaxChanged: 100}
	fullDiff          = pipeline.Options{diff.OptIncremental: false}
)

// apply's ways to a first load: the incremental runs speculate
// (stages/apply/speculate.go) and load into a partition of the tenant's
// own (bulk.go) on every file, however small, and the full ones do
// neither, so that every case also proves those ways end in the same
// directory as the plan applied alone. TestSpeculationMatchesThePlan takes
// each way alone. speculations counts what they did, for the test to prove
// they ran (and were mended).
var (
	speculateAndBulk = pipeline.Options{apply.OptSpeculate: true, apply.OptSpeculateMinRows: 0, apply.OptBulkMinRows: 1}
	plainApply       = pipeline.Options{apply.OptSpeculate: false, apply.OptBulkMinRows: 0}
	speculations     = &specLog{}
)

// specLog counts apply's speculations: kept (and of those, with rows
// sent after the plan, and with sent rows deleted) and undone; and its
// bulk loads.
type specLog struct {
	mu                                   sync.Mutex
	kept, resent, dropped, undone, bulks int
}

// log is the slog.Logger that feeds h.
func (h *specLog) log() *slog.Logger { return slog.New(logHook(h.record)) }

func (h *specLog) record(msg string, ints map[string]int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch msg {
	case "apply: speculation kept":
		h.kept++
		if ints["resent"] > 0 {
			h.resent++
		}
		if ints["dropped"] > 0 {
			h.dropped++
		}
	case "apply: speculation undone":
		h.undone++
	case "apply: bulk load attached":
		h.bulks++
	}
}

// pgpPassphrase unlocks fixtures/pgp's test-only key (see its README).
const pgpPassphrase = "test-only-passphrase"

// issueExpect is one expected issue. Row 0 and no column: the whole file.
type issueExpect struct {
	Row      int    `yaml:"row"`
	Column   string `yaml:"column"`
	Code     string `yaml:"code"`
	Value    string `yaml:"value"`    // checked when set
	Contains string `yaml:"contains"` // a substring of the message, checked when set
}

// FileExpect is the expected outcome of one file of a run.
type FileExpect struct {
	Status string         `yaml:"status"`
	Counts map[string]int `yaml:"counts"` // absent counts are 0; rows is checked only when given
	Issues []issueExpect  `yaml:"issues"` // exactly these, in any order
}

// Step is one run of a case.
type Step struct {
	Files []string `yaml:"files"` // default: the case's input.* file
	Date  string   `yaml:"date"`  // logical date (default: the case's)
	// Now, when set, leaves the logical date to the runner: "today" is
	// this instant in the tenant's time zone.
	Now                   string `yaml:"now"`
	AllowMassDeactivation bool   `yaml:"allow_mass_deactivation"`
	DryRun                bool   `yaml:"dry_run"`
	// The expectation of a one-file run…
	FileExpect `yaml:",inline"`
	// …or, for a run of several files, one per file name.
	Each map[string]FileExpect `yaml:"each"`
}

// expectYAML is a case's expect.yaml.
type expectYAML struct {
	// Rule says what the case proves, with FILE_RULES.md's wording.
	Rule string `yaml:"rule"`
	// Skip, when set, skips the case with this reason (a known gap).
	Skip string `yaml:"skip"`
	// Shuffle also runs the case with the data rows of its CSV inputs in
	// other orders, on fresh tenants, and wants the same final snapshot.
	Shuffle bool `yaml:"shuffle"`
	Step    `yaml:",inline"`
	Steps   []Step `yaml:"steps"`
}

type ruleCase struct {
	name, dir string
	tenant    tenantYAML
	expect    expectYAML
	setup     []string // paths
}

var (
	caseNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,55}$`)
	countKeys  = []string{"created", "updated", "deactivated", "reactivated", "scheduled", "unchanged"}
	// severities of the codes that are not errors (FILE_RULES.md).
	severityOf = map[string]pipeline.Severity{
		"unknown_column": pipeline.SeverityWarning, "department_reactivated": pipeline.SeverityWarning,
		"duplicate_file": pipeline.SeverityInfo,
	}
	// codesCovered collects every code some case expects, for TestRulesCoverCodes.
	codesMu      sync.Mutex
	codesCovered = map[string]bool{}
)

func decodeStrict(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func loadCases(t *testing.T) []*ruleCase {
	t.Helper()
	ents, err := os.ReadDir(rulesDir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []*ruleCase
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		c := &ruleCase{name: e.Name(), dir: filepath.Join(rulesDir, e.Name())}
		if !caseNameRE.MatchString(c.name) {
			t.Fatalf("case %q: name must match %s (it becomes the tenant id)", c.name, caseNameRE)
		}
		if err := decodeStrict(filepath.Join(c.dir, "expect.yaml"), &c.expect); err != nil {
			t.Fatalf("case %s: %v", c.name, err)
		}
		if c.expect.Rule == "" {
			t.Fatalf("case %s: expect.yaml needs a rule: line saying what it proves", c.name)
		}
		if _, err := os.Stat(filepath.Join(c.dir, "tenant.yaml")); err == nil {
			if err := decodeStrict(filepath.Join(c.dir, "tenant.yaml"), &c.tenant); err != nil {
				t.Fatalf("case %s: %v", c.name, err)
			}
		}
		if setup, err := os.ReadDir(filepath.Join(c.dir, "setup")); err == nil {
			for _, s := range setup {
				c.setup = append(c.setup, filepath.Join(c.dir, "setup", s.Name()))
			}
		}
		if len(c.expect.Steps) == 0 {
			c.expect.Steps = []Step{c.expect.Step}
		} else if c.expect.Status != "" || len(c.expect.Files) > 0 || len(c.expect.Each) > 0 {
			t.Fatalf("case %s: use either steps: or a single step's fields, not both", c.name)
		}
		for i := range c.expect.Steps {
			s := &c.expect.Steps[i]
			if len(s.Files) == 0 {
				ins, _ := filepath.Glob(filepath.Join(c.dir, "input*"))
				if len(ins) != 1 {
					t.Fatalf("case %s step %d: no files: and %d input* files", c.name, i+1, len(ins))
				}
				s.Files = []string{filepath.Base(ins[0])}
			}
			if len(s.Files) > 1 && s.Status != "" {
				t.Fatalf("case %s step %d: a run of several files needs each:", c.name, i+1)
			}
		}
		cases = append(cases, c)
	}
	if len(cases) == 0 {
		t.Fatal("no cases in " + rulesDir)
	}
	return cases
}

func TestRules(t *testing.T) {
	db, _ := pgtest.New(t)
	cases := loadCases(t)
	t.Run("case", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if c.expect.Skip != "" {
					t.Skip(c.expect.Skip)
				}
				t.Parallel()
				snap := runCase(t, db, c, c.name, nil, incrementalAlways, speculateAndBulk)
				if got := runCase(t, db, c, c.name+"-full", nil, fullDiff, plainApply); got != snap && !t.Failed() {
					t.Errorf("diffed in full and applied without speculating or bulk loading, the snapshot differs:\n--- incremental, speculating, bulk\n%s--- full\n%s", snap, got)
				}
				if c.expect.Shuffle && !t.Failed() {
					for i, perm := range []string{"reversed", "shuffled"} {
						got := runCase(t, db, c, fmt.Sprintf("%s-%d", c.name, i+1), permuter(perm), incrementalAlways, speculateAndBulk)
						if got != snap {
							t.Errorf("with the rows %s the snapshot differs:\n--- in file order\n%s--- %s\n%s", perm, snap, perm, got)
						}
					}
				}
			})
		}
	})
	// The speculation ran on the cases' first loads and was undone on the
	// others (TestSpeculationMatchesThePlan mends it on larger files); the
	// first loads went into partitions of their own.
	t.Run("speculations", func(t *testing.T) {
		h := speculations
		if h.kept < 20 || h.undone < 20 || h.bulks < 20 {
			t.Errorf("speculations: %d kept, %d undone, %d bulk loads; the cases should exercise all three", h.kept, h.undone, h.bulks)
		}
	})
	// Every issue code of schemas/codes.go must be proven by some case.
	t.Run("codes", func(t *testing.T) {
		for _, code := range declaredCodes(t) {
			if !codesCovered[code] && code != "decrypt_too_large" { // covered by stages/decrypt's tests
				t.Errorf("no case in fixtures/rules expects the code %s", code)
			}
		}
	})
}

// declaredCodes reads every Code* constant of schemas/codes.go.
func declaredCodes(t *testing.T) []string {
	f, err := parser.ParseFile(token.NewFileSet(), "../schemas/codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for i, name := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(name.Name, "Code") {
					s, _ := strconv.Unquote(lit.Value)
					codes = append(codes, s)
				}
			}
		}
		return true
	})
	if len(codes) < 30 {
		t.Fatalf("read only %d codes from schemas/codes.go", len(codes))
	}
	return codes
}

// permuter returns how a shuffled run rewrites a CSV input: its data rows
// (one line each) reversed, or in a seeded random order.
func permuter(kind string) func(t *testing.T, path string) string {
	return func(t *testing.T, path string) string {
		if !strings.HasSuffix(path, ".csv") {
			return path
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		data := lines[1:]
		if kind == "reversed" {
			slices.Reverse(data)
		} else {
			rng := rand.New(rand.NewPCG(7, 11))
			rng.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
		}
		out := filepath.Join(t.TempDir(), filepath.Base(path))
		if err := os.WriteFile(out, []byte(strings.Join(append(lines[:1], data...), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func day(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatalf("bad date %q: %v", s, err)
	}
	return d
}

// runCase makes the case's tenant, applies its setup and runs its steps,
// checking each; it returns the final snapshot as text.
func runCase(t *testing.T, db *sqlx.DB, c *ruleCase, tenantID string, rewrite func(*testing.T, string) string, diffOpts, applyOpts pipeline.Options) string {
	ctx := context.Background()
	ty := c.tenant
	tn := pipeline.NewTenant(tenantID)
	// The file rules are what is tested here; the analytics export has its
	// own tests and would multiply this one's time.
	tn.ExportEnabled = false
	if ty.Seats != nil {
		tn.Seats.Int64, tn.Seats.Valid = *ty.Seats, true
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&tn.Omitted, ty.Omitted)
	set(&tn.DateFormat, ty.DateFormat)
	set(&tn.Timezone, ty.Timezone)
	set(&tn.Delimiter, ty.Delimiter)
	if ty.MassDeactivationPct != nil {
		tn.MassDeactivationPct = *ty.MassDeactivationPct
	}
	if ty.CustomFields != nil {
		tn.CustomFields = ty.CustomFields
	}
	if ty.MaxFileBytes > 0 {
		tn.MaxFileBytes = ty.MaxFileBytes
	}
	tn.RequireEncryption = ty.RequireEncryption
	if ty.PGPKey != "" {
		key, err := os.ReadFile(filepath.Join(c.dir, ty.PGPKey))
		if err != nil {
			t.Fatal(err)
		}
		tn.PGPPrivateKey = key
	}
	if err := (pipeline.Tenants{DB: db}).Put(ctx, tn); err != nil {
		t.Fatal(err)
	}
	caseDate := defaultDate
	if ty.Date != "" {
		caseDate = ty.Date
	}
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: speculations.log()}
	input := func(paths []string) []*pipeline.File {
		var fs []*pipeline.File
		// Upload order is the order given: the runner orders a kind by
		// mtime first, and files checked out by git have arbitrary ones.
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i, p := range paths {
			if rewrite != nil {
				p = rewrite(t, p)
			}
			fs = append(fs, &pipeline.File{Name: filepath.Base(p), Source: p, ModTime: base.Add(time.Duration(i) * time.Second)})
		}
		return fs
	}
	// Each setup file is a run of its own, in name order.
	for _, path := range c.setup {
		res, err := rn.Run(ctx, pipeline.Request{Tenant: tenantID, Files: input([]string{path}), LogicalDate: day(t, caseDate),
			KeyPassphrase: []byte(pgpPassphrase)})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range res.Files {
			if f.Status != pipeline.StatusApplied || f.Issues.Total() > 0 {
				t.Fatalf("setup file %s: %s with issues %+v (%v); setup files must apply cleanly", f.Name, f.Status, f.Issues.List(), f.Err)
			}
		}
	}
	for i, s := range c.expect.Steps {
		name := fmt.Sprintf("step %d", i+1)
		req := pipeline.Request{Tenant: tenantID, DryRun: s.DryRun, AllowMassDeactivation: s.AllowMassDeactivation,
			KeyPassphrase: []byte(pgpPassphrase), Overrides: maps.Clone(smallBatches)}
		req.Overrides["diff"] = diffOpts
		req.Overrides["apply"] = applyOpts
		var paths []string
		for _, f := range s.Files {
			paths = append(paths, filepath.Join(c.dir, f))
		}
		req.Files = input(paths)
		runner := *rn
		switch {
		case s.Now != "":
			now, err := time.Parse(time.RFC3339, s.Now)
			if err != nil {
				t.Fatalf("%s: now: %v", name, err)
			}
			runner.Now = func() time.Time { return now }
		case s.Date != "":
			req.LogicalDate = day(t, s.Date)
		default:
			req.LogicalDate = day(t, caseDate)
		}
		before := snapshot(t, db, tenantID)
		res, err := runner.Run(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		changed := false
		for _, f := range res.Files {
			if f.Status == pipeline.StatusFailed {
				t.Fatalf("%s: %s failed for a system reason: %v", name, f.Name, f.Err)
			}
			want := s.FileExpect
			if len(s.Files) > 1 {
				var ok bool
				if want, ok = s.Each[f.Name]; !ok {
					t.Fatalf("%s: no expectation for %s under each:", name, f.Name)
				}
			}
			checkFile(t, name+": "+f.Name, f, want)
			if !s.DryRun {
				checkLedger(t, db, name+": "+f.Name, f)
			}
			changed = changed || f.Status == pipeline.StatusApplied
		}
		// A rejected file, a duplicate and a dry run change nothing.
		if after := snapshot(t, db, tenantID); !changed && after != before {
			t.Errorf("%s: nothing was applied, yet the directory changed:\n--- before\n%s--- after\n%s", name, before, after)
		}
	}
	for _, kind := range []string{"users", "departments"} {
		want := filepath.Join(c.dir, "after", kind+".csv")
		if _, err := os.Stat(want); err == nil {
			compareSnapshot(t, db, tenantID, kind, want)
		}
	}
	return snapshot(t, db, tenantID)
}

type issueKey struct {
	row          int
	column, code string
}

func checkFile(t *testing.T, where string, f *pipeline.File, want FileExpect) {
	t.Helper()
	if want.Status == "" {
		t.Errorf("%s: the expectation has no status", where)
	}
	if string(f.Status) != want.Status {
		t.Errorf("%s: status %s, want %s (err: %v)", where, f.Status, want.Status, f.Err)
	}
	got := map[string]int{"created": f.Counts.Created, "updated": f.Counts.Updated, "deactivated": f.Counts.Deactivated,
		"reactivated": f.Counts.Reactivated, "scheduled": f.Counts.Scheduled, "unchanged": f.Counts.Unchanged}
	for k := range want.Counts {
		if k != "rows" && !slices.Contains(countKeys, k) {
			t.Errorf("%s: unknown count %q in the expectation", where, k)
		}
	}
	if f.Status != pipeline.StatusRejected && f.Status != pipeline.StatusDuplicate {
		for _, k := range countKeys {
			if got[k] != want.Counts[k] {
				t.Errorf("%s: %s = %d, want %d (counts %+v)", where, k, got[k], want.Counts[k], f.Counts)
			}
		}
		if n, ok := want.Counts["rows"]; ok && n != f.Counts.Rows {
			t.Errorf("%s: rows = %d, want %d", where, f.Counts.Rows, n)
		}
	} else if len(want.Counts) > 0 {
		t.Errorf("%s: a %s file has no counts; remove counts: from the expectation", where, want.Status)
	}
	list := f.Issues.List()
	if f.Issues.Truncated() > 0 {
		t.Errorf("%s: %d issues were cut", where, f.Issues.Truncated())
	}
	var gotKeys, wantKeys []issueKey
	for _, is := range list {
		gotKeys = append(gotKeys, issueKey{is.Row, is.Column, is.Code})
		sev, ok := severityOf[is.Code]
		if !ok {
			sev = pipeline.SeverityError
		}
		if is.Severity != sev {
			t.Errorf("%s: row %d %s has severity %s, want %s", where, is.Row, is.Code, is.Severity, sev)
		}
		if strings.TrimSpace(is.Message) == "" {
			t.Errorf("%s: row %d %s has no message", where, is.Row, is.Code)
		}
	}
	for _, w := range want.Issues {
		wantKeys = append(wantKeys, issueKey{w.Row, w.Column, w.Code})
		codesMu.Lock()
		codesCovered[w.Code] = true
		codesMu.Unlock()
		for _, is := range list {
			if is.Row != w.Row || is.Column != w.Column || is.Code != w.Code {
				continue
			}
			if w.Value != "" && is.Value != w.Value {
				t.Errorf("%s: row %d %s: value %q, want %q", where, w.Row, w.Code, is.Value, w.Value)
			}
			if w.Contains != "" && !strings.Contains(is.Message, w.Contains) {
				t.Errorf("%s: row %d %s: message %q does not contain %q", where, w.Row, w.Code, is.Message, w.Contains)
			}
		}
	}
	sortKeys := func(k []issueKey) {
		sort.Slice(k, func(a, b int) bool { return fmt.Sprint(k[a]) < fmt.Sprint(k[b]) })
	}
	sortKeys(gotKeys)
	sortKeys(wantKeys)
	if fmt.Sprint(gotKeys) != fmt.Sprint(wantKeys) {
		var b strings.Builder
		for _, is := range list {
			fmt.Fprintf(&b, "\n  - {row: %d, column: %s, code: %s}  # %s", is.Row, is.Column, is.Code, is.Message)
		}
		t.Errorf("%s: issues differ\n got: %v\nwant: %v\nissues:%s", where, gotKeys, wantKeys, b.String())
	}
}

// checkLedger checks that the ledger recorded what the run returned: the
// same status, counts and issues, as `roster runs show` would print them.
func checkLedger(t *testing.T, db *sqlx.DB, where string, f *pipeline.File) {
	t.Helper()
	var rf struct {
		Status      string `db:"status"`
		Kind        string `db:"kind"`
		Created     int    `db:"created"`
		Updated     int    `db:"updated"`
		Deactivated int    `db:"deactivated"`
		Reactivated int    `db:"reactivated"`
		Scheduled   int    `db:"scheduled"`
		Unchanged   int    `db:"unchanged"`
		Errors      int    `db:"errors"`
		Warnings    int    `db:"warnings"`
	}
	if err := db.Get(&rf, `SELECT status, kind, created, updated, deactivated, reactivated, scheduled, unchanged, errors, warnings
		FROM run_files WHERE id = $1`, f.ID); err != nil {
		t.Fatalf("%s: ledger: %v", where, err)
	}
	c := f.Counts
	if rf.Status != string(f.Status) || rf.Created != c.Created || rf.Updated != c.Updated || rf.Deactivated != c.Deactivated ||
		rf.Reactivated != c.Reactivated || rf.Scheduled != c.Scheduled || rf.Unchanged != c.Unchanged ||
		rf.Errors != f.Issues.Errors || rf.Warnings != f.Issues.Warnings {
		t.Errorf("%s: the ledger says %+v, the run %s %+v errors=%d warnings=%d", where, rf, f.Status, c, f.Issues.Errors, f.Issues.Warnings)
	}
	var rows []string
	if err := db.Select(&rows, `SELECT COALESCE(row, 0) || ' ' || "column" || ' ' || code || ' ' || severity FROM issues
		WHERE file_id = $1 ORDER BY 1`, f.ID); err != nil {
		t.Fatalf("%s: ledger issues: %v", where, err)
	}
	var mem []string
	for _, is := range f.Issues.List() {
		mem = append(mem, fmt.Sprintf("%d %s %s %s", is.Row, is.Column, is.Code, is.Severity))
	}
	sort.Strings(mem)
	if strings.Join(rows, "\n") != strings.Join(mem, "\n") {
		t.Errorf("%s: the ledger's issues\n%s\ndiffer from the run's\n%s", where, strings.Join(rows, "\n"), strings.Join(mem, "\n"))
	}
}

// snapshotQueries read a tenant's directory as `roster users` and `roster
// departments` show it, plus manager_id and the custom fields.
var snapshotQueries = map[string]string{
	"users": `SELECT COALESCE(u.employee_id, '') AS employee_id, u.email, u.first_name, u.last_name,
		COALESCE(m.email, '') AS manager_email, COALESCE(m.employee_id, '') AS manager_id,
		COALESCE(d.name, '') AS department_name, u.title, u.location,
		COALESCE(to_char(u.start_date, 'YYYY-MM-DD'), '') AS start_date,
		COALESCE(to_char(u.deactivation_date, 'YYYY-MM-DD'), '') AS deactivation_date, u.active::text AS active,
		u.custom::text AS custom, COALESCE(encode(u.row_digest, 'hex'), '') AS row_digest
		FROM users u LEFT JOIN users m ON m.id = u.manager_id LEFT JOIN departments d ON d.id = u.department_id
		WHERE u.tenant_id = $1 ORDER BY u.email, u.id`,
	"departments": `SELECT d.name, COALESCE(p.name, '') AS parent, d.active::text AS active
		FROM departments d LEFT JOIN departments p ON p.id = d.parent_id WHERE d.tenant_id = $1 ORDER BY d.name_key`,
	// The history, without the ids that differ from tenant to tenant (a
	// manager change shows as one, by e-mail).
	"history": `SELECT 'department' AS of, d.name_key AS who, h.action, h.changes::text AS changes, h.effective_date::text AS effective
		FROM department_history h JOIN departments d ON d.id = h.department_id WHERE h.tenant_id = $1
		UNION ALL
		SELECT 'user', u.email, h.action, (h.changes - 'manager_id')::text || CASE WHEN h.changes ? 'manager_id' THEN ' manager: ' ||
			COALESCE((SELECT m.email FROM users m WHERE m.id = (h.changes -> 'manager_id' ->> 'new')::bigint), '') ELSE '' END, h.effective_date::text
		FROM user_history h JOIN users u ON u.id = h.user_id WHERE h.tenant_id = $1
		UNION ALL
		SELECT 'created', u.email, 'create', '', r.logical_date::text FROM users u JOIN runs r ON r.id = u.created_run_id WHERE u.tenant_id = $1
		ORDER BY 1, 2, 3, 4, 5`,
}

// table reads one snapshot query as a header and rows of text.
func table(t *testing.T, db *sqlx.DB, tenant, kind string) ([]string, [][]string) {
	t.Helper()
	rows, err := db.Queryx(snapshotQueries[kind], tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]string
	for rows.Next() {
		vals := make([]string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cols, out
}

// snapshot is the whole directory of a tenant as text.
func snapshot(t *testing.T, db *sqlx.DB, tenant string) string {
	t.Helper()
	var b strings.Builder
	for _, kind := range []string{"departments", "users", "history"} {
		cols, rows := table(t, db, tenant, kind)
		b.WriteString(strings.Join(cols, ",") + "\n")
		for _, r := range rows {
			b.WriteString(strings.Join(r, ",") + "\n")
		}
	}
	return b.String()
}

// compareSnapshot compares the tenant's directory with an expected CSV,
// on the columns the CSV names, ignoring row order.
func compareSnapshot(t *testing.T, db *sqlx.DB, tenant, kind, path string) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	want, err := csv.NewReader(fh).ReadAll()
	if err != nil || len(want) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	cols, rows := table(t, db, tenant, kind)
	var idx []int
	for _, h := range want[0] {
		i := slices.Index(cols, h)
		if i < 0 {
			t.Fatalf("%s: unknown column %q (known: %s)", path, h, strings.Join(cols, ", "))
		}
		idx = append(idx, i)
	}
	line := func(r []string) string {
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		w.Write(r) //nolint:errcheck
		w.Flush()
		return b.String()
	}
	var got, exp []string
	for _, r := range rows {
		var p []string
		for _, i := range idx {
			p = append(p, r[i])
		}
		got = append(got, line(p))
	}
	for _, r := range want[1:] {
		exp = append(exp, line(r))
	}
	sort.Strings(got)
	sort.Strings(exp)
	if strings.Join(got, "") != strings.Join(exp, "") {
		t.Errorf("%s after the case differs from %s\n--- got\n%s%s--- want\n%s%s", kind, path,
			line(want[0]), strings.Join(got, ""), line(want[0]), strings.Join(exp, ""))
	}
}
