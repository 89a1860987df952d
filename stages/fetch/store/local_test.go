package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roster-hr/roster/pipeline"
)

// newHome makes an empty tenant home as the embedded server lays it out.
func newHome(t testing.TB) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "sftp", "acme")
	for _, d := range []string{"incoming", "processed", "failed", "reports", ".partial"} {
		must(t, os.MkdirAll(filepath.Join(home, d), 0o750))
	}
	return home
}

func TestLocal(t *testing.T) {
	t.Parallel()
	testStore(t, func(t *testing.T) (pipeline.Store, string) {
		home := newHome(t)
		return Local(home), home
	})
}

func TestLocalRetryWrapped(t *testing.T) {
	t.Parallel()
	testStore(t, func(t *testing.T) (pipeline.Store, string) {
		home := newHome(t)
		return Retry(Local(home), 3, time.Millisecond), home
	})
}

// The embedded server only shows complete uploads: one List is enough,
// and its own partial uploads stay invisible.
func TestLocalListsAtOnce(t *testing.T) {
	t.Parallel()
	home := newHome(t)
	mtime := time.Now().Add(-time.Minute)
	put(t, home, "incoming/a.csv", "a", mtime)
	put(t, home, ".partial/b.csv", "half", mtime)
	files, err := Local(home).List(context.Background())
	must(t, err)
	checkFiles(t, files, []pipeline.RemoteFile{{Name: "a.csv", Size: 1, ModTime: mtime}})
}

func TestLocalMissingHome(t *testing.T) {
	t.Parallel()
	home := filepath.Join(t.TempDir(), "never-logged-in")
	s := Local(home)
	files, err := s.List(context.Background())
	if err != nil || len(files) != 0 {
		t.Fatalf("List of a missing home = %v, %v; want nothing", files, err)
	}
	must(t, s.PutReport(context.Background(), "x.report.csv", []byte("x")))
	checkContent(t, home, "reports/x.report.csv", "x")
}
