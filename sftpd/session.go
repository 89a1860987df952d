package sftpd

import (
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// session serves one SFTP subsystem of one tenant. It implements pkg/sftp's
// request-server handlers over the tenant's home.
type session struct {
	srv    *Server
	tenant string
	root   *os.Root // the home; every file operation goes through it
	log    *slog.Logger

	mu      sync.Mutex
	uploads map[string]*upload // open uploads by client path, for fstat
}

var (
	_ sftp.FileReader           = (*session)(nil)
	_ sftp.OpenFileWriter       = (*session)(nil)
	_ sftp.PosixRenameFileCmder = (*session)(nil)
	_ sftp.LstatFileLister      = (*session)(nil)
	_ sftp.ReadlinkFileLister   = (*session)(nil)
)

func (s *Server) newSession(tenant string, log *slog.Logger) (*session, error) {
	home := s.homeDir(tenant)
	// OpenRoot follows a symlink given as the home itself; make sure it is
	// a real directory (EnsureHome checked too, this is after it).
	if err := mustBeDir(home); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(home)
	if err != nil {
		return nil, err
	}
	return &session{srv: s, tenant: tenant, root: root, log: log, uploads: map[string]*upload{}}, nil
}

// close runs after the request server has closed every handle.
func (ss *session) close() { ss.root.Close() }

func (ss *session) resolve(p string) (target, error) { return resolve(ss.root, p) }

// Fileread opens a file for download. Any regular file of the four folders
// may be read.
func (ss *session) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	t, err := ss.resolve(r.Filepath)
	if err != nil {
		return nil, ss.refuse("download", r.Filepath, err)
	}
	switch {
	case t.isRoot() || (t.fi != nil && t.fi.IsDir()):
		return nil, errIsDir
	case t.fi == nil:
		return nil, errNotExist
	}
	f, err := ss.root.OpenFile(t.rel, openReadFlag, 0)
	if err != nil {
		return nil, ss.refuse("download", t.vpath, fsError(err))
	}
	// The file may have been swapped between Lstat and open; serve it only
	// if it is still the regular file resolve vetted.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || !os.SameFile(fi, t.fi) {
		f.Close()
		return nil, ss.refuse("download", t.vpath, errSpecial)
	}
	ss.log.Info("download", "action", "download", "path", t.vpath, "size", t.fi.Size())
	// *os.File reads with pread: safe for clients with several reads in flight.
	return f, nil
}

// Filewrite and OpenFile open an upload (see upload.go).
func (ss *session) Filewrite(r *sftp.Request) (io.WriterAt, error) { return ss.openUpload(r) }

func (ss *session) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return ss.openUpload(r)
}

// Filecmd handles the commands that change the tree.
func (ss *session) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		// chmod/chown/utime are acknowledged and ignored: clients such as
		// FileZilla and `put -p` send them after an upload and treat a
		// failure as a failed transfer, and modes are ours to decide. The
		// path must still exist in the home.
		t, err := ss.resolve(r.Filepath)
		if err != nil {
			return err
		}
		u := ss.openUploadFor(t.vpath)
		if !t.isRoot() && t.fi == nil && u == nil {
			return errNotExist
		}
		// A size on an upload in progress is a truncate (OpenSSH sends one
		// after every upload); on a finished file it is ignored like the
		// rest, since files in incoming/ change only as a whole.
		if u != nil && r.AttrFlags().Size {
			return u.truncate(int64(r.Attributes().Size))
		}
		return nil
	case "Rename":
		return ss.rename(r, false)
	case "Remove":
		return ss.remove(r)
	case "Mkdir", "Rmdir":
		return ss.refuse(strings.ToLower(r.Method), r.Filepath, errNoDirs)
	case "Symlink", "Link":
		// Request.Filepath is the link's target here, Request.Target the new
		// link; neither is resolved, both are refused.
		return ss.refuse(strings.ToLower(r.Method), r.Target, errNoLinks)
	}
	return sftp.ErrSSHFxOpUnsupported
}

// PosixRename is rename that replaces an existing target
// (posix-rename@openssh.com, which OpenSSH's sftp uses for "rename").
func (ss *session) PosixRename(r *sftp.Request) error { return ss.rename(r, true) }

func (ss *session) rename(r *sftp.Request, replace bool) error {
	from, err := ss.resolve(r.Filepath)
	if err != nil {
		return ss.refuse("rename", r.Filepath, err)
	}
	to, err := ss.resolve(r.Target)
	if err != nil {
		return ss.refuse("rename", r.Target, err)
	}
	if !from.inIncoming() || !to.inIncoming() {
		return ss.refuse("rename", from.vpath+" -> "+to.vpath, errReadOnly)
	}
	switch {
	case from.fi == nil:
		return errNotExist
	case from.fi.IsDir(), to.fi != nil && to.fi.IsDir():
		return errIsDir
	case from.vpath == to.vpath:
		return nil
	case to.fi != nil && !replace:
		// SFTP v3 rename must not replace (OpenSSH's sshd refuses too).
		return errExists
	}
	if err := ss.root.Rename(from.rel, to.rel); err != nil {
		return ss.refuse("rename", from.vpath+" -> "+to.vpath, fsError(err))
	}
	ss.log.Info("rename", "action", "rename", "from", from.vpath, "to", to.vpath)
	// A complete file has appeared under a new name in incoming/ (WinSCP,
	// for one, uploads "x.filepart" and renames it): tell the callback, as
	// for an upload.
	ss.srv.uploaded(ss.tenant, to.name())
	return nil
}

func (ss *session) remove(r *sftp.Request) error {
	t, err := ss.resolve(r.Filepath)
	if err != nil {
		return ss.refuse("remove", r.Filepath, err)
	}
	if !t.inIncoming() {
		return ss.refuse("remove", t.vpath, errReadOnly)
	}
	switch {
	case t.fi == nil:
		return errNotExist
	case t.fi.IsDir():
		return errIsDir
	}
	if err := ss.root.Remove(t.rel); err != nil {
		return ss.refuse("remove", t.vpath, fsError(err))
	}
	ss.log.Info("remove", "action", "remove", "path", t.vpath)
	return nil
}

// Filelist serves directory listings and stat.
func (ss *session) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		return ss.list(r.Filepath)
	case "Stat":
		return ss.stat(r.Filepath)
	case "Readlink":
		return nil, errNoLinks
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// Lstat is Stat: symbolic links are refused, never shown.
func (ss *session) Lstat(r *sftp.Request) (sftp.ListerAt, error) { return ss.stat(r.Filepath) }

// Readlink: no client ever sees a link.
func (ss *session) Readlink(string) (string, error) { return "", errNoLinks }

func (ss *session) stat(p string) (sftp.ListerAt, error) {
	t, err := ss.resolve(p)
	if err != nil {
		if err == errNotExist {
			return nil, err // clients stat missing files all the time
		}
		return nil, ss.refuse("stat", p, err)
	}
	if t.isRoot() {
		return listerAt{ss.rootInfo()}, nil
	}
	if t.fi == nil {
		// fstat on an upload in progress arrives as a stat of its path
		// (pkg/sftp passes the handle's path): answer from the partial file.
		if u := ss.openUploadFor(t.vpath); u != nil {
			if fi, err := u.stat(); err == nil {
				return listerAt{fi}, nil
			}
		}
		return nil, errNotExist
	}
	return listerAt{presentInfo(t.comps, t.fi)}, nil
}

func (ss *session) list(p string) (sftp.ListerAt, error) {
	t, err := ss.resolve(p)
	if err != nil {
		return nil, ss.refuse("list", p, err)
	}
	if t.isRoot() {
		var l listerAt
		for _, d := range homeDirs {
			fi, err := ss.root.Lstat(d)
			if err != nil || !fi.IsDir() {
				continue
			}
			l = append(l, presentInfo([]string{d}, fi))
		}
		return l, nil
	}
	switch {
	case t.fi == nil:
		return nil, errNotExist
	case !t.fi.IsDir():
		return nil, errNotDir
	}
	d, err := ss.root.Open(t.rel)
	if err != nil {
		return nil, fsError(err)
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, fsError(err)
	}
	l := make(listerAt, 0, len(entries))
	for _, e := range entries {
		// Show only what resolve would let the client open: hidden names
		// (.partial among them), links, special files and multiply-linked
		// files are left out, so nobody learns of them.
		if checkName(e.Name()) != nil {
			continue
		}
		fi, err := e.Info() // Lstat
		if err != nil {
			continue
		}
		mode := fi.Mode()
		if !mode.IsDir() && (!mode.IsRegular() || linkCount(fi) > 1) {
			continue
		}
		l = append(l, presentInfo(append(slices.Clip(t.comps), e.Name()), fi))
	}
	slices.SortFunc(l, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	return l, nil
}

func (ss *session) rootInfo() os.FileInfo {
	var mtime time.Time
	if fi, err := ss.root.Stat("."); err == nil {
		mtime = fi.ModTime()
	}
	return &fileInfo{name: "/", mode: fs.ModeDir | 0o555, mtime: mtime}
}

// refuse logs a refused request at Info (refusals are what an operator
// looks for when a customer says "it doesn't work") and returns err. p is
// the client's path, never an on-disk one.
func (ss *session) refuse(action, p string, err error) error {
	ss.log.Info("refused", "action", action, "path", p, "reason", err.Error())
	return err
}

func (ss *session) openUploadFor(vpath string) *upload {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.uploads[vpath]
}

func (ss *session) track(u *upload) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.uploads[u.vpath] = u
}

func (ss *session) untrack(u *upload) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.uploads[u.vpath] == u {
		delete(ss.uploads, u.vpath)
	}
}

// fileInfo is what clients see of a file: name, size, time and a mode that
// tells them what they may do (read-only outside /incoming). Sys is nil, so
// no uid/gid of the host is sent.
type fileInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (f *fileInfo) Name() string       { return f.name }
func (f *fileInfo) Size() int64        { return f.size }
func (f *fileInfo) Mode() fs.FileMode  { return f.mode }
func (f *fileInfo) ModTime() time.Time { return f.mtime }
func (f *fileInfo) IsDir() bool        { return f.mode.IsDir() }
func (f *fileInfo) Sys() any           { return nil }

// presentInfo builds the client's view of the entry at comps.
func presentInfo(comps []string, fi fs.FileInfo) os.FileInfo {
	writable := comps[0] == incomingDir
	var mode fs.FileMode
	switch {
	case fi.IsDir() && writable && len(comps) == 1:
		mode = fs.ModeDir | 0o750
	case fi.IsDir():
		mode = fs.ModeDir | 0o550
	case writable:
		mode = 0o640
	default:
		mode = 0o440
	}
	size := fi.Size()
	if fi.IsDir() {
		size = 0
	}
	return &fileInfo{name: comps[len(comps)-1], size: size, mode: mode, mtime: fi.ModTime()}
}

// listerAt serves a listing computed up front.
type listerAt []os.FileInfo

func (l listerAt) ListAt(dst []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if n < len(dst) {
		return n, io.EOF
	}
	return n, nil
}
