package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roster-hr/roster/pipeline"
)

// testStore is the conformance suite every pipeline.Store implementation
// passes. mk returns a fresh store for an empty tenant home and that home's
// directory on disk, with incoming/, processed/, failed/ and reports/.
//
// A store may need two polls to list a file without a done marker (SFTP),
// so the suite lists through settled, which calls List twice.
func testStore(t *testing.T, mk func(t *testing.T) (pipeline.Store, string)) {
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		s, _ := mk(t)
		if got := settled(t, s); len(got) != 0 {
			t.Fatalf("List = %v, want nothing", got)
		}
	})

	t.Run("ListOrderAndFilters", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/a.csv", "aaaa", base.Add(2*time.Second))
		put(t, home, "incoming/c.csv", "c", base.Add(time.Second))
		put(t, home, "incoming/b.csv", "bb", base.Add(time.Second))
		put(t, home, "incoming/.hidden.csv", "x", base)
		put(t, home, "incoming/orphan.csv.done", "", base)
		put(t, home, "incoming/orphan.csv.done.pgp", "", base)
		put(t, home, "incoming/sub/inner.csv", "x", base)
		must(t, os.Symlink("a.csv", filepath.Join(home, "incoming", "link.csv")))
		must(t, os.Symlink("/etc/passwd", filepath.Join(home, "incoming", "passwd.csv")))
		mkfifo(t, filepath.Join(home, "incoming", "fifo.csv"))
		got := settled(t, s)
		want := []pipeline.RemoteFile{
			{Name: "b.csv", Size: 2, ModTime: base.Add(time.Second)},
			{Name: "c.csv", Size: 1, ModTime: base.Add(time.Second)},
			{Name: "a.csv", Size: 4, ModTime: base.Add(2 * time.Second)},
		}
		checkFiles(t, got, want)
	})

	t.Run("ListMarkers", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/users.csv", "u", base)
		put(t, home, "incoming/users.csv.done", "", base)
		put(t, home, "incoming/employees.202611210200.csv.pgp", "pgp", base.Add(time.Second))
		put(t, home, "incoming/employees.202611210200.csv.done.pgp", "", base.Add(time.Second))
		put(t, home, "incoming/depts.csv.pgp", "pgp2", base.Add(2*time.Second))
		put(t, home, "incoming/depts.csv.pgp.done", "", base.Add(2*time.Second))
		// Markers count whatever their own name: listed once, never as data.
		got := names(settled(t, s))
		want := []string{"users.csv", "employees.202611210200.csv.pgp", "depts.csv.pgp"}
		if !slices.Equal(got, want) {
			t.Fatalf("List = %v, want %v", got, want)
		}
	})

	t.Run("FetchBytes", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		small := "id,name\n1,Ada\n"
		big := make([]byte, 3<<20+12345) // beyond 64 concurrent 32 KiB reads
		rand.Read(big)
		put(t, home, "incoming/small.csv", small, base)
		put(t, home, "incoming/big.csv", string(big), base)
		put(t, home, "incoming/empty.csv", "", base)
		for name, want := range map[string][]byte{"small.csv": []byte(small), "big.csv": big, "empty.csv": {}} {
			var buf bytes.Buffer
			n, err := s.Fetch(ctx, name, &buf)
			if err != nil {
				t.Fatalf("Fetch %s: %v", name, err)
			}
			if n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("Fetch %s: %d bytes, equal=%v; want %d", name, n, bytes.Equal(buf.Bytes(), want), len(want))
			}
		}
		// Fetching leaves the file where it is.
		if got := dirNames(t, home, "incoming"); !slices.Equal(got, []string{"big.csv", "empty.csv", "small.csv"}) {
			t.Fatalf("incoming after Fetch = %v", got)
		}
	})

	t.Run("FetchErrors", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/a.csv", "a", base)
		put(t, home, "incoming/dir/x", "x", base)
		put(t, home, "processed/p.csv", "p", base)
		must(t, os.Symlink("a.csv", filepath.Join(home, "incoming", "link.csv")))
		var buf bytes.Buffer
		if _, err := s.Fetch(ctx, "missing.csv", &buf); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Fetch missing: %v, want fs.ErrNotExist", err)
		}
		for _, name := range []string{"", ".", "..", "../processed/p.csv", "dir/x", ".hidden", `a\b`} {
			if _, err := s.Fetch(ctx, name, &buf); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Fetch %q: %v, want fs.ErrInvalid", name, err)
			}
		}
		for _, name := range []string{"link.csv", "dir"} {
			if _, err := s.Fetch(ctx, name, &buf); err == nil {
				t.Errorf("Fetch %q: no error for a non-regular file", name)
			}
		}
		if buf.Len() != 0 {
			t.Errorf("failed fetches wrote %q", buf.String())
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Fetch(cctx, "a.csv", &buf); !errors.Is(err, context.Canceled) {
			t.Errorf("Fetch with a cancelled context: %v", err)
		}
	})

	t.Run("FinishOKWithMarker", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/a.csv", "a", base)
		put(t, home, "incoming/a.csv.done", "", base)
		put(t, home, "incoming/b.csv", "b", base)
		if got := names(settled(t, s)); !slices.Equal(got, []string{"a.csv", "b.csv"}) {
			t.Fatalf("List = %v", got)
		}
		must(t, s.Finish(ctx, "a.csv", true))
		checkDir(t, home, "incoming", "b.csv")
		checkDir(t, home, "processed", "a.csv", "a.csv.done")
		checkDir(t, home, "failed")
		checkContent(t, home, "processed/a.csv", "a")
		if got := names(settled(t, s)); !slices.Equal(got, []string{"b.csv"}) {
			t.Fatalf("List after Finish = %v", got)
		}
	})

	t.Run("FinishFailedPGPMarker", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/e.csv.pgp", "pgp", base)
		put(t, home, "incoming/e.csv.done.pgp", "", base)
		put(t, home, "incoming/e.csv.pgp.done", "", base)
		must(t, s.Finish(ctx, "e.csv.pgp", false))
		checkDir(t, home, "incoming")
		checkDir(t, home, "failed", "e.csv.done.pgp", "e.csv.pgp", "e.csv.pgp.done")
		checkDir(t, home, "processed")
	})

	t.Run("FinishReplaces", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "processed/a.csv", "old", base)
		put(t, home, "processed/a.csv.done", "old marker", base)
		put(t, home, "failed/b.csv", "old", base)
		put(t, home, "incoming/a.csv", "new", base)
		put(t, home, "incoming/a.csv.done", "", base)
		put(t, home, "incoming/b.csv", "new b", base)
		must(t, s.Finish(ctx, "a.csv", true))
		must(t, s.Finish(ctx, "b.csv", false))
		checkContent(t, home, "processed/a.csv", "new")
		checkContent(t, home, "processed/a.csv.done", "")
		checkContent(t, home, "failed/b.csv", "new b")
		checkDir(t, home, "incoming")
	})

	t.Run("FinishCreatesFolder", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		must(t, os.Remove(filepath.Join(home, "failed")))
		put(t, home, "incoming/a.csv", "a", base)
		must(t, s.Finish(ctx, "a.csv", false))
		checkDir(t, home, "failed", "a.csv")
	})

	t.Run("FinishMissing", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/gone.csv.done", "", base)
		put(t, home, "processed/gone.csv", "earlier", base)
		if err := s.Finish(ctx, "gone.csv", true); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Finish missing: %v, want fs.ErrNotExist", err)
		}
		checkDir(t, home, "incoming", "gone.csv.done")
		checkContent(t, home, "processed/gone.csv", "earlier")
		if err := s.Finish(ctx, "../incoming/x", true); !errors.Is(err, fs.ErrInvalid) {
			t.Fatalf("Finish with a path: %v, want fs.ErrInvalid", err)
		}
	})

	t.Run("PutReport", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		must(t, s.PutReport(ctx, "a.csv.report.csv", []byte("row,column,code\n")))
		checkContent(t, home, "reports/a.csv.report.csv", "row,column,code\n")
		must(t, s.PutReport(ctx, "a.csv.report.csv", []byte("replaced\n")))
		must(t, s.PutReport(ctx, "b.csv.report.csv", nil))
		checkContent(t, home, "reports/a.csv.report.csv", "replaced\n")
		checkContent(t, home, "reports/b.csv.report.csv", "")
		checkDir(t, home, "reports", "a.csv.report.csv", "b.csv.report.csv") // no temporary files left
		st, err := os.Stat(filepath.Join(home, "reports", "a.csv.report.csv"))
		must(t, err)
		if st.Mode().Perm() != reportPerm {
			t.Errorf("report mode %v, want %v", st.Mode().Perm(), reportPerm)
		}
		if err := s.PutReport(ctx, "../incoming/x.csv", []byte("x")); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("PutReport with a path: %v, want fs.ErrInvalid", err)
		}
		must(t, os.RemoveAll(filepath.Join(home, "reports")))
		must(t, s.PutReport(ctx, "c.report.csv", []byte("c")))
		checkContent(t, home, "reports/c.report.csv", "c")
	})

	t.Run("PutReportAtomic", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		bodies := [2][]byte{bytes.Repeat([]byte("A"), 300<<10), bytes.Repeat([]byte("B"), 200<<10)}
		file := filepath.Join(home, "reports", "r.report.csv")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var bad []string
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(file)
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil || !(bytes.Equal(b, bodies[0]) || bytes.Equal(b, bodies[1])) {
					bad = append(bad, "read a half-written report")
					return
				}
			}
		}()
		for i := range 20 {
			must(t, s.PutReport(ctx, "r.report.csv", bodies[i%2]))
		}
		close(stop)
		wg.Wait()
		if len(bad) > 0 {
			t.Fatal(bad[0])
		}
		checkDir(t, home, "reports", "r.report.csv")
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		s, home := mk(t)
		put(t, home, "incoming/a.csv", "a", base)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.List(cctx); !errors.Is(err, context.Canceled) {
			t.Errorf("List: %v", err)
		}
		if err := s.Finish(cctx, "a.csv", true); !errors.Is(err, context.Canceled) {
			t.Errorf("Finish: %v", err)
		}
		if err := s.PutReport(cctx, "a.report.csv", nil); !errors.Is(err, context.Canceled) {
			t.Errorf("PutReport: %v", err)
		}
		checkDir(t, home, "incoming", "a.csv")
		checkDir(t, home, "reports")
	})
}

// settled lists twice, so that files without a marker have been seen by
// two polls, and returns the second listing.
func settled(t *testing.T, s pipeline.Store) []pipeline.RemoteFile {
	t.Helper()
	if _, err := s.List(context.Background()); err != nil {
		t.Fatalf("List: %v", err)
	}
	files, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return files
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// put writes home/rel with content and mtime, creating folders.
func put(t testing.TB, home, rel, content string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(home, filepath.FromSlash(rel))
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
	must(t, os.Chtimes(p, mtime, mtime))
}

func names(files []pipeline.RemoteFile) []string {
	var n []string
	for _, f := range files {
		n = append(n, f.Name)
	}
	return n
}

// checkFiles compares listings, with mtimes to the second (SFTP v3).
func checkFiles(t testing.TB, got, want []pipeline.RemoteFile) {
	t.Helper()
	eq := slices.EqualFunc(got, want, func(a, b pipeline.RemoteFile) bool {
		return a.Name == b.Name && a.Size == b.Size && a.ModTime.Unix() == b.ModTime.Unix()
	})
	if !eq {
		t.Fatalf("List =\n%v\nwant\n%v", got, want)
	}
}

func dirNames(t testing.TB, home, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(home, dir))
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

// checkDir checks the exact (sorted) contents of home/dir.
func checkDir(t testing.TB, home, dir string, want ...string) {
	t.Helper()
	if got := dirNames(t, home, dir); !slices.Equal(got, want) {
		t.Fatalf("%s/ holds %v, want %v", dir, got, want)
	}
}

func checkContent(t testing.TB, home, rel, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("%s = %q, want %q", rel, b, want)
	}
}
