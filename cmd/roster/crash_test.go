package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// rosterBinary builds the command once per test process: the crash campaign
// kills a real process, not a goroutine.
func rosterBinary(t *testing.T) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "roster-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "roster")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// state is everything a run leaves that must not depend on crashes: the
// directory by content (ids differ: sequences do not roll back), history,
// and how often the file was applied.
func state(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	// Freshly loaded tables have no statistics until autovacuum comes by;
	// without them these joins sometimes took a minute.
	if _, err := db.Exec(`ANALYZE users, departments, user_history, run_files`); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, q := range []string{
		`SELECT string_agg(concat_ws(',', u.employee_id, u.email, u.first_name, u.last_name, m.email, d.name, u.title, u.location,
			u.start_date, u.deactivation_date, u.custom::text, u.active, u.created_run_id IS NOT NULL), '|' ORDER BY u.email) FROM users u
			LEFT JOIN users m ON m.id = u.manager_id LEFT JOIN departments d ON d.id = u.department_id`,
		`SELECT string_agg(concat_ws(',', d.name, p.name, d.active), '|' ORDER BY d.name) FROM departments d LEFT JOIN departments p ON p.id = d.parent_id`,
		`SELECT string_agg(concat_ws(',', h.action, h.effective_date, u.email, h.changes - 'manager_id'), '|' ORDER BY u.email, h.action)
			FROM user_history h JOIN users u ON u.id = h.user_id`,
		`SELECT count(*)::text FROM run_files WHERE status = 'applied'`,
	} {
		var s *string
		if err := db.Get(&s, q); err != nil {
			t.Fatal(err)
		}
		if s != nil {
			parts = append(parts, *s)
		}
	}
	return strings.Join(parts, "\n#\n")
}

func crashTrials(t *testing.T) int {
	if v, err := strconv.Atoi(os.Getenv("ROSTER_CRASH_TRIALS")); err == nil && v > 0 {
		return v
	}
	return 10
}

// TestCrashCampaign kills `roster run` with SIGKILL at a random moment, runs
// it again at once, and compares users, departments, history and ledger with
// a clean single run. The re-run must not be blocked by the dead one, and
// the dead run must end up failed with a reason. ROSTER_CRASH_TRIALS and
// ROSTER_CRASH_ROWS scale it (make test-long: 100 trials of 100k rows).
func TestCrashCampaign(t *testing.T) {
	bin := rosterBinary(t)
	rows := 5000
	if v, err := strconv.Atoi(os.Getenv("ROSTER_CRASH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	dir := t.TempDir()
	var b bytes.Buffer
	fixtures.WriteUsers(&b, fixtures.UserOptions{Rows: rows, Seed: 11, PastDeactivations: 0.02, ApostropheIDs: 0.05}) //nolint:errcheck
	users := filepath.Join(dir, "users.csv")
	os.WriteFile(users, b.Bytes(), 0o644) //nolint:errcheck
	var d bytes.Buffer
	fixtures.WriteDepartments(&d) //nolint:errcheck
	depts := filepath.Join(dir, "departments.csv")
	os.WriteFile(depts, d.Bytes(), 0o644) //nolint:errcheck

	roster := func(ctx context.Context, url string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--db", url, "--data-dir", filepath.Join(dir, "var")}, args...)...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
		return cmd
	}
	setup := func(t *testing.T) (*sqlx.DB, string) {
		db, url := pgtest.New(t)
		if out, err := roster(context.Background(), url, "tenant", "add", "acme").CombinedOutput(); err != nil {
			t.Fatalf("tenant add: %v %s", err, out)
		}
		return db, url
	}
	fullRun := []string{"run", "--tenant", "acme", "--date", "2026-03-02", "--file", depts, "--file", users}

	refDB, refURL := setup(t)
	started := time.Now()
	if out, err := roster(context.Background(), refURL, fullRun...).CombinedOutput(); err != nil {
		t.Fatalf("reference run: %v %s", err, out)
	}
	clean := time.Since(started)
	want := state(t, refDB)

	seed := uint64(time.Now().UnixNano())
	t.Logf("clean run %s; seed %d", clean.Round(time.Millisecond), seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	trials, killedMidRun, done := crashTrials(t), 0, 0
	for i := 0; i < trials; i++ {
		// A subtest per trial: its database and pool go when it ends, so a
		// hundred trials never hold a hundred pools.
		t.Run(fmt.Sprintf("trial-%d", i), func(t *testing.T) {
			db, url := setup(t)
			cmd := roster(context.Background(), url, fullRun...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wait := time.Duration(rng.Int64N(int64(clean)*8/10 + 1))
			time.Sleep(wait)
			cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // it may have finished
			err := cmd.Wait()
			if err != nil {
				killedMidRun++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			again := time.Now()
			// A re-run slower than a clean run plus margin is caught in the
			// act: what its database sessions wait on, and (SIGQUIT) where
			// its goroutines are, say why.
			var activity string
			rerun := roster(ctx, url, fullRun...)
			var outBuf strings.Builder
			rerun.Stdout, rerun.Stderr = &outBuf, &outBuf
			if err := rerun.Start(); err != nil {
				t.Fatal(err)
			}
			slow := time.AfterFunc(clean*2+3*time.Second, func() {
				db.Get(&activity, `SELECT coalesce(string_agg(format('pid %s %s wait=%s/%s age=%s: %s', pid, state, wait_event_type, wait_event,
					now() - query_start, left(query, 120)), E'\n'), '') FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`) //nolint:errcheck
				rerun.Process.Signal(syscall.SIGQUIT) //nolint:errcheck // the Go runtime prints every goroutine and exits
			})
			rerr := rerun.Wait()
			took := time.Since(again)
			out := outBuf.String()
			if !slow.Stop() {
				t.Fatalf("trial %d (killed after %s): the re-run was still going after %s: blocked by the dead run? sessions:\n%s\nits goroutines:\n%s",
					i, wait, clean*2+3*time.Second, activity, out)
			}
			cancel()
			if rerr != nil {
				t.Fatalf("trial %d (killed after %s): the re-run failed: %v\n%s", i, wait, rerr, out)
			}
			if got := state(t, db); got != want {
				t.Fatalf("trial %d (killed after %s): state differs from a clean run", i, wait)
			}
			var stale int
			db.Get(&stale, `SELECT count(*) FROM runs WHERE status = 'running' OR (status = 'failed' AND failure_reason = '')`) //nolint:errcheck
			if stale != 0 {
				t.Fatalf("trial %d: %d runs left running or failed without a reason", i, stale)
			}
			if took > clean*3+5*time.Second {
				t.Fatalf("trial %d (killed after %s): the re-run took %s: blocked by the dead run? sessions while it was slow:\n%s", i, wait, took, activity)
			}
		})
		if t.Failed() {
			break
		}
		done++
	}
	t.Logf("%d of %d trials passed, %d killed mid-run", done, trials, killedMidRun)
}
