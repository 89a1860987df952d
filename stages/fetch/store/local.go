package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/roster-hr/roster/pipeline"
)

// Local returns the store of one tenant of the embedded SFTP server, read
// directly on disk: home is <data-dir>/sftp/<tenant>, holding incoming/,
// processed/, failed/ and reports/. The embedded server only makes an
// upload visible in incoming/ once it is complete, so every data file there
// is listed at once.
//
// A missing incoming/ lists as empty (the server creates the folders at the
// tenant's first login); Finish and PutReport create the folders they need.
func Local(home string) pipeline.Store { return &local{home: home} }

type local struct{ home string }

func (l *local) dir(d string) string { return filepath.Join(l.home, d) }

func (l *local) List(ctx context.Context) ([]pipeline.RemoteFile, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := l.dir(dirIncoming)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: list incoming: %w", err)
	}
	var files []pipeline.RemoteFile
	for _, e := range entries {
		name := e.Name()
		if !listable(name) || IsMarker(name) || !e.Type().IsRegular() {
			continue
		}
		st, err := os.Lstat(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // finished by someone else meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("store: list incoming: %w", err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		files = append(files, pipeline.RemoteFile{Name: name, Size: st.Size(), ModTime: st.ModTime()})
	}
	sortFiles(files)
	return files, nil
}

// sortFiles orders files by upload order: mtime, then name.
func sortFiles(files []pipeline.RemoteFile) {
	slices.SortFunc(files, func(a, b pipeline.RemoteFile) int {
		return cmp.Or(a.ModTime.Compare(b.ModTime), cmp.Compare(a.Name, b.Name))
	})
}

func (l *local) Fetch(ctx context.Context, name string, w io.Writer) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	dir := l.dir(dirIncoming)
	lst, err := os.Lstat(filepath.Join(dir, name))
	if err != nil {
		return 0, fmt.Errorf("store: fetch: %w", err)
	}
	if !lst.Mode().IsRegular() {
		return 0, fmt.Errorf("store: fetch %s: not a regular file", name)
	}
	// OpenInRoot cannot leave incoming/, even if name were swapped for a
	// link after the Lstat; SameFile catches the swap itself.
	f, err := os.OpenInRoot(dir, name)
	if err != nil {
		return 0, fmt.Errorf("store: fetch: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !os.SameFile(lst, st) {
		return 0, fmt.Errorf("store: fetch %s: file changed while opening", name)
	}
	n, err := io.Copy(ctxWriter{ctx, w}, f)
	if err != nil {
		return n, fmt.Errorf("store: fetch %s: %w", name, err)
	}
	return n, nil
}

func (l *local) Finish(ctx context.Context, name string, ok bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	src, dst := l.dir(dirIncoming), l.dir(finishDir(ok))
	if _, err := os.Lstat(filepath.Join(src, name)); err != nil {
		return fmt.Errorf("store: finish: %w", err)
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return fmt.Errorf("store: finish: %w", err)
	}
	// Markers go first: a crash in between leaves the data file without
	// its marker (still taken once stable), never a stale marker that
	// would vouch for a later upload of the same name.
	for _, m := range MarkerNames(name) {
		err := os.Rename(filepath.Join(src, m), filepath.Join(dst, m))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store: finish: move marker: %w", err)
		}
	}
	if err := os.Rename(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
		return fmt.Errorf("store: finish: %w", err)
	}
	return nil
}

func (l *local) PutReport(ctx context.Context, name string, body []byte) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := l.dir(dirReports)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	// A dot-name: never listed, and unreachable through the embedded server.
	tmp, err := os.CreateTemp(dir, ".report-*.tmp")
	if err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(body); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	if err := tmp.Chmod(reportPerm); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("store: put report: %w", err)
	}
	return nil
}
