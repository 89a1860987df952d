package sftpd

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// plantedHome makes a home with everything a hostile or careless process on
// the host could leave in it, next to another tenant's home.
func plantedHome(tb testing.TB) (home string, root *os.Root) {
	tb.Helper()
	base := tb.TempDir()
	home = filepath.Join(base, "acme")
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	for _, d := range append(slices.Clone(homeDirs), partialDir) {
		must(os.MkdirAll(filepath.Join(home, d), 0o750))
	}
	must(os.MkdirAll(filepath.Join(base, "globex", "incoming"), 0o750))
	must(os.WriteFile(filepath.Join(base, "globex", "incoming", "secret.csv"), []byte("x"), 0o640))
	must(os.WriteFile(filepath.Join(home, "incoming", "ok.csv"), []byte("x"), 0o640))
	must(os.WriteFile(filepath.Join(home, partialDir, "p.part"), []byte("x"), 0o640))
	must(os.Mkdir(filepath.Join(home, "reports", "2024"), 0o750))
	must(os.WriteFile(filepath.Join(home, "reports", "2024", "r.csv"), []byte("x"), 0o640))
	must(os.Symlink("/etc", filepath.Join(home, "incoming", "evil")))
	must(os.Symlink("../../globex/incoming", filepath.Join(home, "incoming", "peek")))
	must(os.Symlink("../reports", filepath.Join(home, "incoming", "inside")))
	must(os.Symlink("../"+partialDir, filepath.Join(home, "processed", "partial")))
	must(os.Link(filepath.Join(base, "globex", "incoming", "secret.csv"), filepath.Join(home, "reports", "hl.csv")))
	must(syscall.Mkfifo(filepath.Join(home, "failed", "fifo"), 0o640))
	r, err := os.OpenRoot(home)
	must(err)
	tb.Cleanup(func() { r.Close() })
	return home, r
}

func TestResolve(t *testing.T) {
	_, root := plantedHome(t)
	cases := []struct {
		path    string
		wantRel string // "" when an error is wanted
		exists  bool
		wantErr error
	}{
		{"/", ".", false, nil},
		{"", ".", false, nil},
		{"/incoming", "incoming", true, nil},
		{"/incoming/ok.csv", "incoming/ok.csv", true, nil},
		{"incoming//./ok.csv", "incoming/ok.csv", true, nil},
		{"/incoming/new.csv", "incoming/new.csv", false, nil},
		{"/reports/2024/r.csv", "reports/2024/r.csv", true, nil},
		{"/Incoming", "", false, errNotExist},
		{"/etc/passwd", "", false, errNotExist},
		{"/globex/incoming/secret.csv", "", false, errNotExist},
		{"/incoming/missing/x", "", false, errNotExist},
		{"/incoming/ok.csv/x", "", false, errNotDir},
		{"/../globex", "", false, errOutside},
		{"/incoming/../../globex", "", false, errOutside},
		{"..", "", false, errOutside},
		{"/incoming/evil", "", false, errSymlink},
		{"/incoming/evil/passwd", "", false, errSymlink},
		{"/incoming/peek/secret.csv", "", false, errSymlink},
		{"/incoming/inside/2024/r.csv", "", false, errSymlink},
		{"/processed/partial/p.part", "", false, errSymlink},
		{"/reports/hl.csv", "", false, errHardLink},
		{"/failed/fifo", "", false, errSpecial},
		{"/.partial", "", false, errBadName},
		{"/.partial/p.part", "", false, errBadName},
		{"/incoming/.x", "", false, errBadName},
		{"/incoming/a\x00b", "", false, errBadName},
		{"/incoming/a\nb", "", false, errBadName},
		{"/incoming/a\\b", "", false, errBadName},
		{"/incoming/\xff", "", false, errBadName},
		{"/incoming/a\u0085b", "", false, errBadName},
		{"/incoming/" + strings.Repeat("a", 256), "", false, errNameLong},
		{"/incoming/résumé.csv", "incoming/résumé.csv", false, nil},
	}
	for _, c := range cases {
		got, err := resolve(root, c.path)
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("resolve(%q) = %+v, %v; want %v", c.path, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got.rel != c.wantRel || (got.fi != nil) != c.exists {
			t.Errorf("resolve(%q) = rel %q exists %v, %v; want %q exists %v", c.path, got.rel, got.fi != nil, err, c.wantRel, c.exists)
		}
	}
}

// FuzzResolve: whatever the client sends, resolve either refuses it or
// names something inside the home, in one of the four folders, reached
// without a symlink and outside .partial.
func FuzzResolve(f *testing.F) {
	for _, seed := range []string{
		"/", "", ".", "..", "/..", "/../..", "../../etc/passwd", "/../globex/incoming/secret.csv",
		"/incoming/../../globex", "/incoming/ok.csv", "/incoming/evil/passwd", "/incoming/peek/secret.csv",
		"/incoming/inside/2024/r.csv", "/processed/partial/p.part", "/.partial/p.part", "//incoming//ok.csv",
		"/incoming/./ok.csv", "incoming/..\\..\\x", "/incoming/\x00", "/reports/hl.csv", "/failed/fifo",
		"/Incoming", "/incoming/a\nb", "/reports/2024/../2024/r.csv", "/incoming/...", "/ incoming",
	} {
		f.Add(seed)
	}
	home, root := plantedHome(f)
	realHome, err := filepath.EvalSymlinks(home)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := resolve(root, p)
		if err != nil {
			return
		}
		if got.rel == "." {
			if !got.isRoot() {
				t.Fatalf("resolve(%q): rel . for %v", p, got.comps)
			}
			return
		}
		if !filepath.IsLocal(got.rel) || got.rel != strings.Join(got.comps, "/") {
			t.Fatalf("resolve(%q) = %q: not local", p, got.rel)
		}
		if !slices.Contains(homeDirs, got.comps[0]) {
			t.Fatalf("resolve(%q) = %q: not in a home folder", p, got.rel)
		}
		for _, c := range got.comps {
			if checkName(c) != nil {
				t.Fatalf("resolve(%q) = %q: bad component %q", p, got.rel, c)
			}
		}
		// Walk the real path: no component may be a symlink, and the result
		// must lie inside the home.
		cur := home
		for _, c := range got.comps {
			cur = filepath.Join(cur, c)
			fi, err := os.Lstat(cur)
			if err != nil {
				break // only the last may be missing; resolve checked that
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				t.Fatalf("resolve(%q) = %q goes through symlink %s", p, got.rel, cur)
			}
		}
		if real, err := filepath.EvalSymlinks(filepath.Join(home, got.rel)); err == nil {
			if !strings.HasPrefix(real, realHome+string(filepath.Separator)) ||
				strings.HasPrefix(real, filepath.Join(realHome, partialDir)) {
				t.Fatalf("resolve(%q) = %q leads to %s", p, got.rel, real)
			}
		}
	})
}
