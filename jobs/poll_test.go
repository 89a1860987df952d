package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/fetch/store"
)

func replica(db *sqlx.DB, staging, home string) *jobs.Poller {
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: staging, Log: slog.New(slog.DiscardHandler)}
	return &jobs.Poller{Runner: rn, Log: slog.New(slog.DiscardHandler), StoreFor: func(context.Context, string) (pipeline.Store, error) {
		return store.Local(home), nil
	}}
}

// TestTwoReplicasApplyEachFileOnceInOrder runs two pollers, as two replicas
// of roster serve, against one database and one store while 20 files
// arrive: each file is applied exactly once, in upload order.
func TestTwoReplicasApplyEachFileOnceInOrder(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "acme")
	for _, d := range []string{"incoming", "processed", "failed", "reports"} {
		os.MkdirAll(filepath.Join(home, d), 0o750) //nolint:errcheck
	}
	staging := t.TempDir()
	replicas := []*jobs.Poller{replica(db, staging, home), replica(db, staging, home)}

	const files = 20
	base := time.Now().Add(-time.Hour)
	pctx, stop := context.WithTimeout(ctx, 60*time.Second)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the customer uploads one file every 30 ms
		defer wg.Done()
		for i := 1; i <= files; i++ {
			name := fmt.Sprintf("users-%02d.csv", i)
			body := fmt.Sprintf("employee_id,email,first_name,last_name,title\n1,ada@example.com,Ada,Lovelace,T%02d\n2,bob@example.com,Bob,Smith,T%02d\n", i, i)
			tmp := filepath.Join(home, ".tmp-"+name)
			os.WriteFile(tmp, []byte(body), 0o640)                                                          //nolint:errcheck
			os.Chtimes(tmp, base.Add(time.Duration(i)*time.Second), base.Add(time.Duration(i)*time.Second)) //nolint:errcheck
			os.Rename(tmp, filepath.Join(home, "incoming", name))                                           //nolint:errcheck
			time.Sleep(30 * time.Millisecond)
		}
	}()
	applied := func() int {
		var n int
		db.Get(&n, `SELECT count(*) FROM run_files WHERE status IN ('applied', 'duplicate')`) //nolint:errcheck
		return n
	}
	for _, r := range replicas {
		wg.Add(1)
		go func(p *jobs.Poller) {
			defer wg.Done()
			for i := 0; i < 2000 && pctx.Err() == nil && applied() < files; i++ {
				if _, err := p.PollTenant(pctx, "acme"); err != nil {
					t.Errorf("poll: %v", err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(r)
	}
	wg.Wait()
	var names []string
	if err := db.Select(&names, `SELECT name FROM run_files WHERE status = 'applied' ORDER BY applied_at, id`); err != nil {
		t.Fatal(err)
	}
	if len(names) != files {
		t.Fatalf("%d files applied, want %d: %v", len(names), files, names)
	}
	for i, n := range names {
		if want := fmt.Sprintf("users-%02d.csv", i+1); n != want {
			t.Fatalf("application order %v: position %d is %s, want %s", names, i, n, want)
		}
	}
	var failed int
	db.Get(&failed, `SELECT count(*) FROM runs WHERE status = 'failed'`) //nolint:errcheck
	if failed != 0 {
		t.Fatalf("%d failed runs", failed)
	}
	var title string
	db.Get(&title, `SELECT title FROM users WHERE employee_id = '1'`) //nolint:errcheck
	if title != "T20" {
		t.Fatalf("final title %q, want T20", title)
	}
	if left, _ := os.ReadDir(filepath.Join(home, "incoming")); len(left) != 0 {
		t.Fatalf("%d files left in incoming", len(left))
	}
}

func TestElectorHasOneLeader(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	a, b := &jobs.Elector{DB: db}, &jobs.Elector{DB: db}
	if err := a.IsLeader(ctx); err != nil {
		t.Fatalf("first replica: %v", err)
	}
	if err := a.IsLeader(ctx); err != nil {
		t.Fatalf("leader asked again: %v", err)
	}
	if err := b.IsLeader(ctx); err != jobs.ErrNotLeader {
		t.Fatalf("second replica: %v, want ErrNotLeader", err)
	}
	a.Resign()
	if err := b.IsLeader(ctx); err != nil {
		t.Fatalf("after the leader resigned: %v", err)
	}
}
