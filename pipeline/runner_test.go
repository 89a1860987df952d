package pipeline_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

var today = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	db  *sqlx.DB
	dir string
	rn  *pipeline.Runner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, _ := pgtest.New(t)
	if err := (pipeline.Tenants{DB: db}).Put(context.Background(), pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &env{t: t, db: db, dir: dir, rn: &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: filepath.Join(dir, "staging"), Log: slog.New(slog.DiscardHandler)}}
}

func (e *env) write(name string, body []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, body, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) run(req pipeline.Request, paths ...string) *pipeline.Result {
	e.t.Helper()
	req.Tenant = "acme"
	if req.LogicalDate.IsZero() {
		req.LogicalDate = today
	}
	for _, p := range paths {
		req.Files = append(req.Files, &pipeline.File{Name: filepath.Base(p), Source: p})
	}
	res, err := e.rn.Run(context.Background(), req)
	if err != nil {
		e.t.Fatalf("run: %v", err)
	}
	return res
}

func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.Get(&n, q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// fingerprint is the whole directory and history as one string, to prove
// that something changed nothing.
func (e *env) fingerprint() string {
	e.t.Helper()
	var s string
	err := e.db.Get(&s, `SELECT
		coalesce((SELECT string_agg(t::text, '|' ORDER BY id) FROM users t), '') || '#' ||
		coalesce((SELECT string_agg(t::text, '|' ORDER BY id) FROM departments t), '') || '#' ||
		(SELECT count(*) FROM user_history)::text || '#' || (SELECT count(*) FROM department_history)::text`)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func usersFile(t *testing.T, rows int) []byte {
	var b bytes.Buffer
	if err := fixtures.WriteUsers(&b, fixtures.UserOptions{Rows: rows, Seed: 7, ApostropheIDs: 0.1, Today: today}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func deptFile(t *testing.T) []byte {
	var b bytes.Buffer
	if err := fixtures.WriteDepartments(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// edit changes a generated user file: two new users, five title changes
// and three past deactivation dates.
func edit(t *testing.T, in []byte) []byte {
	recs, err := csv.NewReader(bytes.NewReader(in)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for i := 10; i < 15; i++ {
		recs[i][col["title"]] = "Chief Example Officer"
	}
	for i := 20; i < 23; i++ {
		recs[i][col["deactivation_date"]] = today.AddDate(0, 0, -3).Format(time.DateOnly)
	}
	for _, n := range []int{9001, 9002} {
		r := append([]string(nil), recs[1]...)
		r[col["employee_id"]] = "N" + strings.Repeat("0", 2) + string(rune('0'+n%10))
		r[col["email"]] = fixtures.Email(n)
		r[col["manager_email"]] = fixtures.Email(1)
		recs = append(recs, r)
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.WriteAll(recs) //nolint:errcheck
	return b.Bytes()
}

func TestFirstLoadCreatesEveryUserWithManagersAndDepartments(t *testing.T) {
	e := newEnv(t)
	res := e.run(pipeline.Request{}, e.write("departments.csv", deptFile(t)), e.write("users.csv", usersFile(t, 1000)))
	if res.Status != pipeline.RunSucceeded {
		t.Fatalf("status %s: %s", res.Status, res.Reason)
	}
	if res.Files[0].Kind != "departments" || res.Files[1].Kind != "users" {
		t.Fatalf("files not in apply order: %s, %s", res.Files[0].Kind, res.Files[1].Kind)
	}
	if c := res.Files[1].Counts; c.Created != 1000 || c.Rows != 1000 {
		t.Fatalf("counts %+v, want 1000 created", c)
	}
	if n := e.count(`SELECT count(*) FROM users WHERE active`); n != 1000 {
		t.Fatalf("%d active users, want 1000", n)
	}
	// Everyone but the head of the company has the manager the file names.
	if n := e.count(`SELECT count(*) FROM users u JOIN users m ON m.id = u.manager_id
		WHERE m.email = 'user' || lpad(((replace(u.employee_id, '''', '')::int - 2) / 8 + 1)::text, 6, '0') || '@example.com'`); n != 999 {
		t.Fatalf("%d users with the right manager, want 999", n)
	}
	if n := e.count(`SELECT count(*) FROM users WHERE department_id IS NULL`); n != 0 {
		t.Fatalf("%d users without a department", n)
	}
	if n := e.count(`SELECT count(*) FROM departments d JOIN departments p ON p.id = d.parent_id JOIN departments g ON g.id = p.parent_id`); n == 0 {
		t.Fatal("no three-level department hierarchy")
	}
	// The apostrophe is gone and the zeros stay.
	if n := e.count(`SELECT count(*) FROM users WHERE employee_id LIKE '''%' OR employee_id !~ '^0'`); n != 0 {
		t.Fatalf("%d employee ids kept an apostrophe or lost zeros", n)
	}
	// A creation is recorded on the user, not as a history row.
	if n := e.count(`SELECT count(*) FROM users WHERE created_run_id = $1 AND created_file_id IS NOT NULL`, res.RunID); n != 1000 {
		t.Fatalf("%d users record the run and file that created them, want 1000", n)
	}
	if n := e.count(`SELECT count(*) FROM user_history`); n != 0 {
		t.Fatalf("a first load wrote %d history rows, want none", n)
	}
	if n := e.count(`SELECT count(*) FROM user_field_history WHERE action = 'create' AND field = 'email' AND old_value IS NULL AND run_id = $1`, res.RunID); n != 1000 {
		t.Fatalf("user_field_history lists %d creations, want 1000", n)
	}
	// Every stage is in the ledger with its rows.
	if n := e.count(`SELECT count(*) FROM run_stages WHERE run_id = $1 AND stage = 'parse' AND rows_out = 1000`, res.RunID); n != 1 {
		t.Fatal("parse stage of the user file not recorded with 1000 rows")
	}
	if n := e.count(`SELECT count(*) FROM run_files WHERE run_id = $1 AND status = 'applied'`, res.RunID); n != 2 {
		t.Fatalf("%d applied files in the ledger, want 2", n)
	}
}

func TestSameFileAgainIsDuplicateAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	users := e.write("users.csv", usersFile(t, 200))
	e.run(pipeline.Request{}, users)
	before := e.fingerprint()
	res := e.run(pipeline.Request{}, users)
	if res.Status != pipeline.RunSucceeded || res.Files[0].Status != pipeline.StatusDuplicate {
		t.Fatalf("second run: %s, file %s", res.Status, res.Files[0].Status)
	}
	if got := res.Files[0].Issues.List(); len(got) != 1 || got[0].Code != "duplicate_file" || got[0].Severity != "info" {
		t.Fatalf("issues %+v, want one duplicate_file info", got)
	}
	if e.fingerprint() != before {
		t.Fatal("a duplicate file changed the directory")
	}
}

func TestChangedFileCountsAndHistory(t *testing.T) {
	e := newEnv(t)
	orig := usersFile(t, 1000)
	e.run(pipeline.Request{}, e.write("users.csv", orig))
	res := e.run(pipeline.Request{}, e.write("users-2.csv", edit(t, orig)))
	c := res.Files[0].Counts
	if c.Created != 2 || c.Updated != 5 || c.Deactivated != 3 || c.Unchanged != 992 || c.Reactivated != 0 || c.Scheduled != 0 {
		t.Fatalf("counts %+v, want created 2, updated 5, deactivated 3, unchanged 992", c)
	}
	if n := e.count(`SELECT count(*) FROM user_history WHERE run_id = $1`, res.RunID); n != 8 {
		t.Fatalf("%d history rows, want 8 (5 updates, 3 deactivations)", n)
	}
	if n := e.count(`SELECT count(*) FROM users WHERE created_run_id = $1`, res.RunID); n != 2 {
		t.Fatalf("%d users created by the second run, want 2", n)
	}
	// The view still shows each user as created: the title the first file
	// gave, which the change recorded as old, not the current one.
	if n := e.count(`SELECT count(*) FROM user_field_history c JOIN user_field_history h ON h.user_id = c.user_id AND h.field = c.field
		WHERE c.action = 'create' AND c.field = 'title' AND h.run_id = $1 AND h.action = 'update'
		AND c.new_value = h.old_value AND c.new_value <> 'Chief Example Officer'`, res.RunID); n != 5 {
		t.Fatalf("%d changed titles show their first value at creation, want 5", n)
	}
	if n := e.count(`SELECT count(*) FROM user_field_history WHERE action = 'create' AND field = 'title'`); n != 1002 {
		t.Fatalf("%d creations in user_field_history, want 1002", n)
	}
	if n := e.count(`SELECT count(*) FROM user_field_history WHERE run_id = $1 AND field = 'title' AND new_value = 'Chief Example Officer'`, res.RunID); n != 5 {
		t.Fatalf("%d title history rows, want 5", n)
	}
	if n := e.count(`SELECT count(*) FROM user_field_history WHERE run_id = $1 AND field = 'active' AND old_value = 'true' AND new_value = 'false'`, res.RunID); n != 3 {
		t.Fatalf("%d deactivation history rows, want 3", n)
	}
	if n := e.count(`SELECT count(*) FROM users WHERE NOT active`); n != 3 {
		t.Fatalf("%d inactive users, want 3", n)
	}
}

func TestDryRunReportsTheSameCountsAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	orig := usersFile(t, 300)
	e.run(pipeline.Request{}, e.write("users.csv", orig))
	before := e.fingerprint()
	runs := e.count(`SELECT count(*) FROM runs`)
	changed := e.write("users-2.csv", edit(t, orig))
	dry := e.run(pipeline.Request{DryRun: true}, changed)
	if dry.Files[0].Status != pipeline.StatusPlanned || !dry.DryRun {
		t.Fatalf("dry run file status %s", dry.Files[0].Status)
	}
	if e.fingerprint() != before || e.count(`SELECT count(*) FROM runs`) != runs {
		t.Fatal("a dry run changed the database")
	}
	real := e.run(pipeline.Request{}, changed)
	if dry.Files[0].Counts != real.Files[0].Counts {
		t.Fatalf("dry run counts %+v differ from the real run's %+v", dry.Files[0].Counts, real.Files[0].Counts)
	}
}

func TestFailureBetweenDepartmentsAndUsersLeavesNothingApplied(t *testing.T) {
	e := newEnv(t)
	orig := usersFile(t, 100)
	e.run(pipeline.Request{}, e.write("users.csv", orig))
	before := e.fingerprint()
	// A new department arrives with the changed file: it must roll back too.
	changed := bytes.Replace(edit(t, orig), []byte(",Platform,"), []byte(",Brand New Dept,"), 1)
	path := e.write("users-2.csv", changed)
	boom := errors.New("injected failure between departments and users")
	res := e.run(pipeline.Request{BeforeUsers: func(ctx context.Context, tx *sqlx.Tx) error {
		var n int
		if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM departments WHERE name = 'Brand New Dept'`); err != nil || n != 1 {
			t.Errorf("departments were not applied before users (n=%d, err=%v)", n, err)
		}
		return boom
	}}, path)
	if res.Status != pipeline.RunFailed || res.FailureClass != pipeline.ClassSystem {
		t.Fatalf("status %s class %s, want failed/system", res.Status, res.FailureClass)
	}
	if e.fingerprint() != before {
		t.Fatal("the failed file left changes behind")
	}
	if n := e.count(`SELECT count(*) FROM run_files WHERE run_id = $1 AND status = 'applied'`, res.RunID); n != 0 {
		t.Fatal("the failed file is recorded as applied")
	}
	// The file is taken again, not treated as a duplicate.
	again := e.run(pipeline.Request{}, path)
	if again.Files[0].Status != pipeline.StatusApplied || again.Files[0].Counts.Created != 2 {
		t.Fatalf("retry: %s %+v", again.Files[0].Status, again.Files[0].Counts)
	}
}

func TestStaleRunIsMarkedFailedAndDoesNotBlock(t *testing.T) {
	e := newEnv(t)
	var id int64
	if err := e.db.Get(&id, `INSERT INTO runs (tenant_id, trigger, logical_date, host, pid) VALUES ('acme', 'manual', $1, 'gone', 4242) RETURNING id`, today); err != nil {
		t.Fatal(err)
	}
	res := e.run(pipeline.Request{}, e.write("users.csv", usersFile(t, 5)))
	if res.Status != pipeline.RunSucceeded {
		t.Fatalf("status %s", res.Status)
	}
	var status, reason string
	if err := e.db.QueryRow(`SELECT status, failure_reason FROM runs WHERE id = $1`, id).Scan(&status, &reason); err != nil {
		t.Fatal(err)
	}
	if status != "failed" || !strings.Contains(reason, "pid 4242") {
		t.Fatalf("stale run: %s %q", status, reason)
	}
}

func TestTenantLockIsExclusive(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	unlock, err := pipeline.LockTenant(ctx, e.db, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rn.Run(ctx, pipeline.Request{Tenant: "acme"}); !errors.Is(err, pipeline.ErrTenantBusy) {
		t.Fatalf("second run while locked: %v, want ErrTenantBusy", err)
	}
	unlock()
	if _, err := e.rn.Run(ctx, pipeline.Request{Tenant: "acme"}); err != nil {
		t.Fatalf("run after unlock: %v", err)
	}
}

// TestLocalFilesApplyInTheOrderGiven: with several --file arguments, files
// of one kind apply in the order given, whatever their modification times;
// department files still come first.
func TestLocalFilesApplyInTheOrderGiven(t *testing.T) {
	e := newEnv(t)
	second := e.write("b.csv", []byte("employee_id,email,first_name,last_name,title\n1,ada@example.com,Ada,Lovelace,Second\n"))
	first := e.write("a.csv", []byte("employee_id,email,first_name,last_name,title\n1,ada@example.com,Ada,Lovelace,First\n"))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(second, old, old) //nolint:errcheck // b.csv is older, but given last
	depts := e.write("d.csv", []byte("name\nEngineering\n"))
	res := e.run(pipeline.Request{}, first, second, depts)
	var order []string
	for _, f := range res.Files {
		order = append(order, f.Name)
	}
	if strings.Join(order, ",") != "d.csv,a.csv,b.csv" {
		t.Fatalf("apply order %v, want d.csv,a.csv,b.csv", order)
	}
	var title string
	e.db.Get(&title, `SELECT title FROM users`) //nolint:errcheck
	if title != "Second" {
		t.Fatalf("title %q: the files were not applied in the order given", title)
	}
}

// probe is an Ordered stage that reads ahead: it records what its
// Prefetch saw and what Process was handed.
type probe struct {
	started chan struct{} // closed when a Prefetch starts
	ended   chan error    // what the Prefetch's context ended with
	got     []any         // per Process call: the prefetched value, or nil
	crash   bool          // Prefetch panics
}

func (p *probe) Prefetch(ctx context.Context, run *pipeline.Run) (any, error) {
	close(p.started)
	if p.crash {
		panic("prefetch crashed")
	}
	if run.Tenant.ID == "acme" && len(p.got) == 0 {
		// Wait until the runner collects or cancels: a prefetch outlives
		// parse, and a rejected file must cancel it.
		select {
		case <-ctx.Done():
			p.ended <- ctx.Err()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
			p.ended <- nil
			return "snapshot", nil
		}
	}
	return nil, nil
}

func (p *probe) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	v, _, err := f.Prefetched(ctx, "probe")
	p.got = append(p.got, v)
	return pipeline.Stats{}, err
}

// gate rejects files named bad*.
type gate struct{}

func (gate) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	if strings.HasPrefix(f.Name, "bad") {
		return pipeline.Stats{}, pipeline.Reject("malformed_csv", "bad file")
	}
	return pipeline.Stats{}, nil
}

func TestPrefetchOverlapsOneFileAndIsCancelledForARejectedOne(t *testing.T) {
	e := newEnv(t)
	p := &probe{started: make(chan struct{}), ended: make(chan error, 1)}
	reg := pipeline.NewRegistry()
	reg.Register(pipeline.Spec{Name: "gate", New: func(pipeline.Options) (any, error) { return gate{}, nil }})
	reg.Register(pipeline.Spec{Name: "probe", Ordered: true, New: func(pipeline.Options) (any, error) { return p, nil }})
	e.rn.Registry, e.rn.Spec = reg, []byte("stages:\n  - name: gate\n  - name: probe\n")

	// One file: the read starts with the run and Process gets its value.
	e.run(pipeline.Request{}, e.write("users.csv", []byte("x")))
	if len(p.got) != 1 || p.got[0] != "snapshot" {
		t.Fatalf("one file: Process got %v, want the prefetched snapshot", p.got)
	}
	if err := <-p.ended; err != nil {
		t.Fatalf("one file: the prefetch was cancelled (%v) before Process collected it", err)
	}

	// Two files: the second's directory depends on the first, no read ahead.
	p.started, p.got = make(chan struct{}), nil
	e.run(pipeline.Request{}, e.write("a.csv", []byte("a")), e.write("b.csv", []byte("b")))
	select {
	case <-p.started:
		t.Fatal("two files: Prefetch was called")
	default:
	}
	if len(p.got) != 2 || p.got[0] != nil || p.got[1] != nil {
		t.Fatalf("two files: Process got %v, want nothing prefetched", p.got)
	}

	// A file rejected before the stage: the read is cancelled, not awaited.
	p.started, p.got = make(chan struct{}), nil
	res := e.run(pipeline.Request{}, e.write("bad.csv", []byte("x")))
	if res.Files[0].Status != pipeline.StatusRejected || len(p.got) != 0 {
		t.Fatalf("rejected file: status %s, Process calls %d", res.Files[0].Status, len(p.got))
	}
	if err := <-p.ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("rejected file: the prefetch ended with %v, want it cancelled", err)
	}

	// A panic while reading ahead fails the file (a system failure), and
	// the process lives on.
	p.started, p.got, p.crash = make(chan struct{}), nil, true
	res = e.run(pipeline.Request{}, e.write("crash.csv", []byte("x")))
	if f := res.Files[0]; f.Status != pipeline.StatusFailed || f.Err == nil || !strings.Contains(f.Err.Error(), "prefetch crashed") {
		t.Fatalf("panicking prefetch: status %s, err %v", f.Status, f.Err)
	}
}
