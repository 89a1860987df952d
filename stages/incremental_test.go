package stages_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

// TestIncrementalDiffMatchesFull sends one random sequence of user files to
// two tenants, one diffed incrementally (on every step, whatever share of
// its rows changes) and one in full, and requires the same outcome at every
// step: the file's status, counts and issues, and the whole directory. The
// files change e-mails (swaps, reuse of a released one), managers (by
// e-mail and by id, stale references, loops, self-references), dates that
// come due as the days pass, departments, rows without an employee id,
// duplicates, and users left out of the file, a few at a time, as nightly
// files do; some steps change nothing but the row order.
func TestIncrementalDiffMatchesFull(t *testing.T) {
	db, _ := pgtest.New(t)
	var took incrementalLog
	log := took.log()
	const seeds, steps = 6, 30
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			omitted := "keep"
			if seed%2 == 1 {
				omitted = "deactivate"
			}
			inc, full := fmt.Sprintf("inc-%d", seed), fmt.Sprintf("full-%d", seed)
			for _, id := range []string{inc, full} {
				putTenant(t, db, id, func(tn *pipeline.Tenant) { tn.Omitted = omitted })
			}
			rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: log}
			g := newPopulation(uint64(seed), 60)
			dir := t.TempDir()
			day0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
			for step := 0; step < steps; step++ {
				today := day0.AddDate(0, 0, step)
				if step > 0 {
					g.mutate(today)
				}
				path := filepath.Join(dir, fmt.Sprintf("users-%02d.csv", step))
				g.write(t, path)
				outcome := func(tenant string, opts pipeline.Options) stepOutcome {
					res, err := rn.Run(context.Background(), pipeline.Request{Tenant: tenant, LogicalDate: today,
						Files:     []*pipeline.File{{Name: filepath.Base(path), Source: path, ModTime: today}},
						Overrides: map[string]pipeline.Options{"diff": opts}})
					if err != nil {
						t.Fatalf("step %d, %s: %v", step, tenant, err)
					}
					f := res.Files[0]
					if f.Status == pipeline.StatusFailed {
						t.Fatalf("step %d, %s: failed: %v", step, tenant, f.Err)
					}
					return stepOutcome{Status: f.Status, Counts: f.Counts, Issues: f.Issues.List(), Directory: snapshot(t, db, tenant)}
				}
				a, b := outcome(inc, incrementalAlways), outcome(full, fullDiff)
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("step %d (%s, omitted users: %s): the incremental diff and the full diff disagree\n%s\nfile:\n%s",
						step, today.Format(time.DateOnly), omitted, disagreement(a, b), readFile(t, path))
				}
			}
			if t.Failed() {
				return
			}
			// The digests were written: the last file, sent again in
			// another order, leaves every accepted row to the fast path
			// unless an issue or a date keeps it.
			if n := digestCount(t, db, inc); n == 0 {
				t.Errorf("no user of %s has a row digest after %d files", inc, steps)
			}
		})
	}
	t.Cleanup(func() {
		// Without rows that were both fast and left to the diff, this test
		// would prove nothing about the incremental path.
		if !t.Failed() && (took.mixed.Load() < seeds*steps/4 || took.allFast.Load() == 0) {
			t.Errorf("the incremental path ran with fast and slow rows in %d steps and with only fast rows in %d: too few for this test to mean anything",
				took.mixed.Load(), took.allFast.Load())
		}
	})
}

// disagreement says what differs between the incremental outcome a and
// the full one b: the status, the counts, and the issues and directory
// lines that only one has.
func disagreement(a, b stepOutcome) string {
	var out strings.Builder
	if a.Status != b.Status || a.Counts != b.Counts {
		fmt.Fprintf(&out, "incremental: %s %+v\nfull:        %s %+v\n", a.Status, a.Counts, b.Status, b.Counts)
	}
	only := func(name string, x, y []string) {
		for _, v := range x {
			if !slices.Contains(y, v) {
				fmt.Fprintf(&out, "only %s: %s\n", name, v)
			}
		}
	}
	var ia, ib []string
	for _, i := range a.Issues {
		ia = append(ia, fmt.Sprintf("%+v", i))
	}
	for _, i := range b.Issues {
		ib = append(ib, fmt.Sprintf("%+v", i))
	}
	only("incremental", ia, ib)
	only("full", ib, ia)
	da, db := strings.Split(a.Directory, "\n"), strings.Split(b.Directory, "\n")
	only("incremental", da, db)
	only("full", db, da)
	return out.String()
}

type stepOutcome struct {
	Status    pipeline.FileStatus
	Counts    pipeline.Counts
	Issues    []pipeline.Issue
	Directory string
}

// incrementalLog counts diff's "incremental" debug records: steps where
// some rows were fast and some left to the diff, and steps where all were
// fast; and keeps the last record's rows left and users read.
type incrementalLog struct {
	mixed, allFast atomic.Int64

	mu         sync.Mutex
	seen       bool // a record since reset
	left, read int64
}

// reset forgets the last record.
func (h *incrementalLog) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen, h.left, h.read = false, 0, 0
}

// log is the slog.Logger that feeds h.
func (h *incrementalLog) log() *slog.Logger { return slog.New(logHook(h.record)) }

func (h *incrementalLog) record(msg string, ints map[string]int64) {
	if msg != "diff: incremental" {
		return
	}
	rows, left, read := ints["rows"], ints["left"], ints["users_read"]
	switch {
	case left == 0:
		h.allFast.Add(1)
	case left < rows:
		h.mixed.Add(1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen, h.left, h.read = true, left, read
}

func digestCount(t *testing.T, db *sqlx.DB, tenant string) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM users WHERE tenant_id = $1 AND row_digest IS NOT NULL`, tenant); err != nil {
		t.Fatal(err)
	}
	return n
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// person is one user as the HR system exports them.
type person struct {
	eid, email, first, last, dept, title, loc string
	mgrEmail, mgrID                           string // at most one set
	deact                                     string
	present                                   bool
}

// population is a customer's HR system, changing a little every day.
type population struct {
	rng    *rand.Rand
	people []*person
	next   int
	extra  []person // rows in today's file only (duplicates)
}

func newPopulation(seed uint64, n int) *population {
	g := &population{rng: rand.New(rand.NewPCG(seed, 7))}
	for i := 0; i < n; i++ {
		g.add()
	}
	for i, p := range g.people {
		if i > 0 {
			g.setManager(p, g.people[g.rng.IntN(i)])
		}
	}
	return g
}

var depts = []string{"Sales", "Engineering", "Finance", "People", "Support"}

func (g *population) add() *person {
	g.next++
	p := &person{eid: fmt.Sprint(1000 + g.next), email: fmt.Sprintf("p%d@example.com", g.next), first: "First", last: fmt.Sprint("Last", g.next),
		dept: depts[g.rng.IntN(len(depts))], title: "Analyst", loc: "Berlin", present: true}
	g.people = append(g.people, p)
	return p
}

func (g *population) pick() *person { return g.people[g.rng.IntN(len(g.people))] }

func (g *population) setManager(p, m *person) {
	p.mgrEmail, p.mgrID = "", ""
	if g.rng.IntN(3) == 0 && m.eid != "" {
		p.mgrID = m.eid
	} else {
		p.mgrEmail = m.email
	}
}

// mutate makes today's few changes.
func (g *population) mutate(today time.Time) {
	g.extra = nil
	for n := g.rng.IntN(5); n > 0; n-- {
		p := g.pick()
		switch g.rng.IntN(16) {
		case 0:
			p.title = fmt.Sprint("Title ", g.rng.IntN(4))
		case 1: // a new e-mail; most reports follow
			old := p.email
			g.next++
			p.email = fmt.Sprintf("renamed%d@example.com", g.next)
			for _, q := range g.people {
				if q.mgrEmail == old && g.rng.IntN(10) < 7 {
					q.mgrEmail = p.email
				}
			}
		case 2: // two people swap e-mails
			q := g.pick()
			p.email, q.email = q.email, p.email
		case 3:
			g.setManager(p, g.pick()) // sometimes a loop, sometimes themselves
		case 4:
			p.mgrEmail, p.mgrID = "nobody@example.com", ""
		case 5:
			p.deact = today.AddDate(0, 0, g.rng.IntN(4)-1).Format(time.DateOnly)
		case 6:
			p.deact = ""
		case 7: // someone new, now and then with an e-mail someone else gave up
			q := g.add()
			if o := g.pick(); !o.present || o.deact != "" {
				q.email = o.email
			}
			g.setManager(q, g.pick())
		case 8:
			p.present = false
		case 9:
			p.present = true
		case 10:
			if g.rng.IntN(3) == 0 {
				p.dept = fmt.Sprint("New dept ", g.rng.IntN(3))
			} else {
				p.dept = depts[g.rng.IntN(len(depts))]
			}
		case 11:
			g.extra = append(g.extra, *p)
		case 12:
			p.eid = ""
		case 13:
			p.loc = fmt.Sprint("Site ", g.rng.IntN(3))
		case 14: // a manager's e-mail changes and no report follows
			g.next++
			p.email = fmt.Sprintf("moved%d@example.com", g.next)
		case 15:
			p.mgrEmail, p.mgrID = "", ""
		}
	}
}

// write writes today's export, its rows in a new order.
func (g *population) write(t *testing.T, path string) {
	t.Helper()
	var rows []person
	for _, p := range g.people {
		if p.present {
			rows = append(rows, *p)
		}
	}
	rows = append(rows, g.extra...)
	g.rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(fh)
	w.Write([]string{"employee_id", "email", "first_name", "last_name", "manager_email", "manager_id", "department_name", "title", "location", "deactivation_date"}) //nolint:errcheck
	for _, p := range rows {
		w.Write([]string{p.eid, p.email, p.first, p.last, p.mgrEmail, p.mgrID, p.dept, p.title, p.loc, p.deact}) //nolint:errcheck
	}
	w.Flush()
	if err := w.Error(); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRowDigestsForgottenAndRestored: a user changed outside a file (an
// operator's UPDATE) loses its row digest, so the same row sent again puts
// the user back as the file says instead of passing as unchanged; users
// without digests (as after migration 0007) get them from the next file
// that leaves them as they are, and the file after that passes over them
// without reading them.
func TestRowDigestsForgottenAndRestored(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	tn := putTenant(t, db, "digests", nil)
	var took incrementalLog
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: took.log()}
	g := newPopulation(99, 40)
	dir := t.TempDir()
	today := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	send := func(step int) pipeline.Counts {
		t.Helper()
		path := filepath.Join(dir, fmt.Sprintf("users-%d.csv", step))
		g.write(t, path) // the same rows, in a new order
		res, err := rn.Run(ctx, pipeline.Request{Tenant: tn.ID, LogicalDate: today,
			Files: []*pipeline.File{{Name: filepath.Base(path), Source: path, ModTime: today.Add(time.Duration(step) * time.Second)}}})
		if err != nil {
			t.Fatal(err)
		}
		if f := res.Files[0]; f.Status != pipeline.StatusApplied {
			t.Fatalf("file %d: %s %v %+v", step, f.Status, f.Err, f.Issues.List())
		}
		return res.Files[0].Counts
	}
	if c := send(0); c.Created != 40 {
		t.Fatalf("first load: %+v", c)
	}
	if n := digestCount(t, db, tn.ID); n != 40 {
		t.Fatalf("%d of 40 users have a row digest after the first load", n)
	}
	// An operator's edit.
	if _, err := db.Exec(`UPDATE users SET title = 'Changed by hand' WHERE tenant_id = $1 AND email = 'p7@example.com'`, tn.ID); err != nil {
		t.Fatal(err)
	}
	if n := digestCount(t, db, tn.ID); n != 39 {
		t.Fatalf("after an edit by hand %d users have a row digest, want 39", n)
	}
	if c := send(1); c.Updated != 1 || c.Unchanged != 39 {
		t.Fatalf("the file after the edit: %+v, want the edited user updated back", c)
	}
	var title string
	if err := db.Get(&title, `SELECT title FROM users WHERE tenant_id = $1 AND email = 'p7@example.com'`, tn.ID); err != nil || title != "Analyst" {
		t.Fatalf("title %q (%v), want the file's Analyst back", title, err)
	}
	// As after migration 0007: no digests at all.
	if _, err := db.Exec(`UPDATE users SET row_digest = NULL WHERE tenant_id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	if c := send(2); c.Unchanged != 40 {
		t.Fatalf("the file after the digests went: %+v", c)
	}
	if n := digestCount(t, db, tn.ID); n != 40 {
		t.Fatalf("%d of 40 users have their row digest back, want all", n)
	}
	before := took.allFast.Load()
	if c := send(3); c.Unchanged != 40 {
		t.Fatalf("the next file: %+v", c)
	}
	if took.allFast.Load() != before+1 {
		t.Fatalf("the next file was not passed over by its digests")
	}
}

// TestRowDigestIsStable pins the digest of one row as apply stores it. A
// change to how rows are digested (their encoding, the hash, its byte
// order, the library) makes every digest stored by the roster before it
// miss, so that each tenant's next file is diffed in full: such a change
// must come with a new digestVersion in stages/diff/digest.go, and a new
// value here.
func TestRowDigestIsStable(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	tn := putTenant(t, db, "pinned", nil)
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte("employee_id,email,first_name,last_name,manager_email,department_name,title,location,start_date,deactivation_date\n"+
		"'000123,Ada.Lovelace@Example.com, Ada ,Lovelace,,Engineering,Analyst,London,2020-01-31,\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
	res, err := rn.Run(ctx, pipeline.Request{Tenant: tn.ID, LogicalDate: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		Files: []*pipeline.File{{Name: "users.csv", Source: path}}})
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Files[0]; f.Status != pipeline.StatusApplied || f.Counts.Created != 1 {
		t.Fatalf("%s %+v %v", f.Status, f.Counts, f.Issues.List())
	}
	var got string
	if err := db.Get(&got, `SELECT encode(row_digest, 'hex') FROM users WHERE tenant_id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	const want = "f904acfde24946e15855b89a222da440"
	if got != want {
		t.Fatalf("row digest %s, want %s: if rows are now digested otherwise, bump digestVersion and pin the new value", got, want)
	}
}

// TestIncrementalDiffStaysLocalInADeepTree: in a tenant of 3,280 users in
// a tree eight levels deep, every manager named by e-mail, a file that
// changes one leaf's title (and reorders every row) leaves only that row
// to the diff and reads only the users it reaches: itself and the
// managers above it. Demoting the leaf's manager would make its other
// reports slow, then theirs, a level a round, until the diff gave up and
// read the whole snapshot.
func TestIncrementalDiffStaysLocalInADeepTree(t *testing.T) {
	db, _ := pgtest.New(t)
	putTenant(t, db, "deep", nil)
	var seen incrementalLog
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: seen.log()}
	// A 3-ary tree: user i reports to user (i-1)/3; 1+3+…+3^7 users.
	const n = 3280
	rows := make([][]string, n)
	for i := range rows {
		mgr := ""
		if i > 0 {
			mgr = fmt.Sprintf("u%d@example.com", (i-1)/3)
		}
		rows[i] = []string{fmt.Sprint(10000 + i), fmt.Sprintf("u%d@example.com", i), "First", fmt.Sprint("Last", i), mgr, "Engineering", "Engineer", "Berlin"}
	}
	dir := t.TempDir()
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	send := func(name string, rows [][]string) *pipeline.File {
		t.Helper()
		path := filepath.Join(dir, name)
		var b strings.Builder
		w := csv.NewWriter(&b)
		w.Write([]string{"employee_id", "email", "first_name", "last_name", "manager_email", "department_name", "title", "location"}) //nolint:errcheck
		w.WriteAll(rows)                                                                                                              //nolint:errcheck
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := rn.Run(context.Background(), pipeline.Request{Tenant: "deep", LogicalDate: day,
			Files:     []*pipeline.File{{Name: name, Source: path, ModTime: day}},
			Overrides: map[string]pipeline.Options{"diff": incrementalAlways}})
		if err != nil {
			t.Fatal(err)
		}
		f := res.Files[0]
		if f.Status != pipeline.StatusApplied || f.Issues.Errors+f.Issues.Warnings != 0 {
			t.Fatalf("%s: %s, %+v", name, f.Status, f.Issues.List())
		}
		return f
	}
	send("first.csv", rows)
	// The leaf: the last user, seven managers above it.
	leaf := n - 1
	changed := slices.Clone(rows)
	changed[leaf] = slices.Clone(rows[leaf])
	changed[leaf][6] = "Staff Engineer"
	slices.Reverse(changed)
	seen.reset()
	f := send("one-title.csv", changed)
	if f.Counts.Updated != 1 || f.Counts.Unchanged != n-1 {
		t.Fatalf("counts %+v, want 1 updated and the rest unchanged", f.Counts)
	}
	if !seen.seen {
		t.Fatal("the diff did not take the incremental path: it read the whole snapshot")
	}
	if seen.left != 1 || seen.read > 8 {
		t.Errorf("the diff left %d rows to decide and read %d users, want 1 row and at most 8 users (the leaf and its managers)", seen.left, seen.read)
	}
	var title string
	if err := db.Get(&title, `SELECT title FROM users WHERE tenant_id = 'deep' AND email = $1`, rows[leaf][1]); err != nil || title != "Staff Engineer" {
		t.Fatalf("the leaf's title: %q, %v", title, err)
	}
}
