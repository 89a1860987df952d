package sftpd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// homeDirs are the folders of every home, sorted: this is also the listing
// of "/".
var homeDirs = []string{"failed", "incoming", "processed", "reports"}

const (
	incomingDir = "incoming"
	// partialDir holds uploads in progress. It sits beside the visible folders
	// (same file system, so the final rename is atomic) and starts with '.',
	// which no client path component may, so clients can neither reach nor
	// plant it.
	partialDir = ".partial"
	// stalePartial is how old a leftover partial file (from a crash) must be
	// before EnsureHome removes it. Live uploads touch theirs at least every
	// idle timeout, so a day is far on the safe side.
	stalePartial = 24 * time.Hour
	maxTenantLen = 128
	maxNameLen   = 255 // NAME_MAX on Linux
)

// validTenant reports whether id can name a home directory. It is a
// whitelist rather than a blacklist of '/', "..", NUL: a tenant ID becomes a
// path component and an SSH user name, and anything unusual is a mistake.
func validTenant(id string) bool {
	if id == "" || len(id) > maxTenantLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// EnsureHome creates the tenant's home with its four folders (mode 0750) and
// the hidden partial-upload folder, if missing. It refuses an invalid tenant
// ID (ErrInvalidTenant) and a home or folder that is not a real directory
// (a symbolic link, say). It also removes partial uploads left over by a
// crash. It is idempotent and is called again at each login.
func (s *Server) EnsureHome(tenant string) error {
	if !validTenant(tenant) {
		return fmt.Errorf("%w: %q", ErrInvalidTenant, tenant)
	}
	home := filepath.Join(s.root, tenant)
	if err := os.Mkdir(home, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("sftpd: create home of %s: %w", tenant, err)
	}
	if err := mustBeDir(home); err != nil {
		return err
	}
	root, err := os.OpenRoot(home)
	if err != nil {
		return fmt.Errorf("sftpd: open home of %s: %w", tenant, err)
	}
	defer root.Close()
	for _, d := range append(slices.Clone(homeDirs), partialDir) {
		perm := fs.FileMode(0o750)
		if d == partialDir {
			perm = 0o700
		}
		if err := root.Mkdir(d, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("sftpd: create %s/%s: %w", tenant, d, err)
		}
		fi, err := root.Lstat(d)
		if err != nil {
			return fmt.Errorf("sftpd: %s/%s: %w", tenant, d, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("sftpd: %s/%s is not a directory (mode %v)", tenant, d, fi.Mode())
		}
	}
	s.removeStalePartials(root, tenant)
	return nil
}

func mustBeDir(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("sftpd: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("sftpd: %s is not a directory (mode %v)", p, fi.Mode())
	}
	return nil
}

func (s *Server) removeStalePartials(root *os.Root, tenant string) {
	d, err := root.Open(partialDir)
	if err != nil {
		return
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < stalePartial {
			continue
		}
		if err := root.Remove(path.Join(partialDir, e.Name())); err == nil {
			s.log.Info("removed stale partial upload", "tenant", tenant, "file", e.Name())
		}
	}
}

// checkName validates one component of a client path. Names starting with
// '.' are refused (this covers ".", ".." and our own .partial); so are
// control characters (newlines in names break logs, reports and e-mails),
// backslashes (a Windows path sent by mistake), invalid UTF-8, and the
// Unicode bidirectional controls, which make a name display as another
// ("users\u202Evsc.exe" shows as "usersexe.csv") in listings, reports and
// e-mails.
func checkName(name string) error {
	if name == "" || name[0] == '.' || !utf8.ValidString(name) {
		return errBadName
	}
	if len(name) > maxNameLen {
		return errNameLong
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || (r >= 0x80 && r < 0xa0) || bidiControl(r) {
			return errBadName
		}
	}
	return nil
}

// bidiControl reports whether r is one of Unicode's bidirectional
// formatting characters (ALM, LRM, RLM, LRE…RLO, LRI…PDI).
func bidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// splitPath turns a client path into validated components. pkg/sftp has
// already cleaned the path lexically (so "/incoming/../reports" arrives as
// "/reports" and a climb above "/" stops at "/"), but a ".." that still
// shows up here is refused rather than interpreted: this function alone must
// keep paths inside the home (see FuzzResolve).
func splitPath(p string) ([]string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return nil, errBadName
	}
	var comps []string
	for c := range strings.SplitSeq(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, errOutside
		}
		if err := checkName(c); err != nil {
			return nil, err
		}
		comps = append(comps, c)
	}
	return comps, nil
}

// target is a resolved client path.
type target struct {
	vpath string   // the clean client path, "/" for the root
	comps []string // its components; none for the root
	rel   string   // the path relative to the home, "." for the root
	fi    fs.FileInfo
	// fi is the Lstat of rel; nil if the last component does not exist (the
	// root has a nil fi too: it is virtual).
}

func (t target) isRoot() bool { return len(t.comps) == 0 }

// inIncoming reports whether t names a file directly in /incoming, the only
// place a client may write.
func (t target) inIncoming() bool { return len(t.comps) == 2 && t.comps[0] == incomingDir }

// name is the last component.
func (t target) name() string { return t.comps[len(t.comps)-1] }

// resolve maps a client path into the home opened as root. Every component
// is Lstat'ed in turn and a symbolic link anywhere is refused, even one
// pointing inside the home: someone else (a process on the host, a restored
// backup) may have planted it, and not following links at all is simpler to
// get right than judging where they lead. Special files and regular files
// with more than one link (a hard link may point outside the home) are
// refused too. Only the last component may be missing.
func resolve(root *os.Root, p string) (target, error) {
	comps, err := splitPath(p)
	if err != nil {
		return target{}, err
	}
	t := target{vpath: "/" + strings.Join(comps, "/"), comps: comps, rel: "."}
	if len(comps) == 0 {
		return t, nil
	}
	// Case-sensitive on purpose: "/Incoming" does not exist.
	if !slices.Contains(homeDirs, comps[0]) {
		return target{}, errNotExist
	}
	for i := range comps {
		rel := strings.Join(comps[:i+1], "/")
		fi, err := root.Lstat(rel)
		if errors.Is(err, fs.ErrNotExist) && i == len(comps)-1 {
			t.rel, t.fi = rel, nil
			return t, nil
		}
		if err != nil {
			return target{}, fsError(err)
		}
		switch mode := fi.Mode(); {
		case mode&fs.ModeSymlink != 0:
			return target{}, errSymlink
		case mode.IsDir():
		case i < len(comps)-1:
			return target{}, errNotDir
		case !mode.IsRegular():
			return target{}, errSpecial
		case linkCount(fi) > 1:
			return target{}, errHardLink
		}
		t.rel, t.fi = rel, fi
	}
	return t, nil
}

// fsError turns an error from the file system into one fit for a client:
// the code is kept, the on-disk path is dropped.
func fsError(err error) error {
	var ce *clientError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return errNotExist
	case errors.Is(err, fs.ErrExist):
		return errExists
	case errors.Is(err, fs.ErrPermission):
		return errPerm
	case isNotDir(err):
		return errNotDir
	case isIsDir(err):
		return errIsDir
	}
	return errInternal
}
