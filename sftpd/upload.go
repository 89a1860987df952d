package sftpd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"

	"github.com/pkg/sftp"
)

// upload is a file being written by a client. Bytes go to a partial file in
// <home>/.partial; Close renames it into incoming/ in one step, so a file
// visible in incoming/ is always complete. A failed, oversized or
// interrupted upload is discarded and never becomes visible.
type upload struct {
	ss      *session
	vpath   string // client path, /incoming/<name>
	name    string
	rel     string // incoming/<name>, relative to the home
	partial string // .partial/<random>, relative to the home
	f       *os.File
	max     int64

	// rw lets WriteAt and ReadAt run concurrently (pwrite/pread; clients keep
	// several writes in flight) while abort and Close wait for them.
	rw   sync.RWMutex
	done bool // partial committed or discarded; guarded by rw

	errMu sync.Mutex
	err   error // why the upload failed; set once
}

var (
	_ sftp.WriterAtReaderAt = (*upload)(nil)
	_ sftp.TransferError    = (*upload)(nil)
	_ io.Closer             = (*upload)(nil)
)

func (ss *session) openUpload(r *sftp.Request) (*upload, error) {
	// Where the client may write is decided on the path alone, before
	// looking at the disk: a clear "read-only" beats "no such file" for
	// "/x.csv" or "/Incoming/x.csv".
	comps, err := splitPath(r.Filepath)
	switch {
	case err != nil:
		return nil, ss.refuse("upload", r.Filepath, err)
	case len(comps) == 1 && comps[0] == incomingDir:
		return nil, errIsDir
	case len(comps) != 2 || comps[0] != incomingDir:
		return nil, ss.refuse("upload", r.Filepath, errReadOnly)
	}
	t, err := ss.resolve(r.Filepath)
	if err != nil {
		return nil, ss.refuse("upload", r.Filepath, err)
	}
	flags := r.Pflags()
	exists := t.fi != nil
	switch {
	case exists && t.fi.IsDir():
		return nil, errIsDir
	case exists && flags.Excl:
		return nil, errExists
	case !exists && !flags.Creat:
		return nil, errNotExist
	}

	u := &upload{ss: ss, vpath: t.vpath, name: t.name(), rel: t.rel, max: ss.srv.maxUpload}
	if u.f, u.partial, err = ss.newPartial(); err != nil {
		ss.log.Error("create partial upload", "action", "upload", "path", t.vpath, "err", err)
		return nil, errInternal
	}
	// Opened without truncation (resume, append, or a read-write open of an
	// existing file): the upload starts as a copy of the current file, so
	// the client's writes at their offsets land on the right bytes.
	if exists && !flags.Trunc {
		if err := u.copyExisting(t); err != nil {
			u.discard()
			return nil, ss.refuse("upload", t.vpath, err)
		}
	}
	ss.track(u)
	ss.log.Info("upload started", "action", "upload", "path", t.vpath)
	return u, nil
}

func (ss *session) newPartial() (*os.File, string, error) {
	var b [16]byte
	rand.Read(b[:])
	rel := path.Join(partialDir, hex.EncodeToString(b[:])+".part")
	f, err := ss.root.OpenFile(rel, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, os.ErrNotExist) {
		// The home predates .partial, or someone removed it.
		if err = ss.root.Mkdir(partialDir, 0o700); err == nil || errors.Is(err, os.ErrExist) {
			f, err = ss.root.OpenFile(rel, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
		}
	}
	return f, rel, err
}

func (u *upload) copyExisting(t target) error {
	src, err := u.ss.root.OpenFile(t.rel, openReadFlag, 0)
	if err != nil {
		return fsError(err)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || !os.SameFile(fi, t.fi) {
		return errSpecial
	}
	n, err := io.Copy(u.f, io.LimitReader(src, u.max+1))
	if err != nil {
		u.ss.log.Error("copy existing file into upload", "path", t.vpath, "err", err)
		return errInternal
	}
	if n > u.max {
		return u.tooLarge()
	}
	return nil
}

func (u *upload) tooLarge() error {
	return fmt.Errorf("%w (limit %d bytes)", errTooLarge, u.max)
}

// WriteAt enforces the size limit before writing, so a client can neither
// fill the disk nor make a sparse file beyond it. The first write past the
// limit discards the upload at once.
func (u *upload) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > u.max || int64(len(p)) > u.max-off {
		err := u.tooLarge()
		u.ss.log.Warn("upload too large", "action", "upload", "path", u.vpath, "limit", u.max)
		u.abort(err)
		return 0, err
	}
	u.rw.RLock()
	defer u.rw.RUnlock()
	if err := u.failure(); err != nil {
		return 0, err
	}
	n, err := u.f.WriteAt(p, off)
	if err != nil {
		u.ss.log.Error("write upload", "action", "upload", "path", u.vpath, "err", err)
		// Close (or the end of the session) discards the partial file.
		u.setErr(errInternal)
		return n, errInternal
	}
	return n, nil
}

// truncate sets the size of the upload (Setstat with a size).
func (u *upload) truncate(size int64) error {
	if size < 0 || size > u.max {
		err := u.tooLarge()
		u.abort(err)
		return err
	}
	u.rw.RLock()
	defer u.rw.RUnlock()
	if err := u.failure(); err != nil {
		return err
	}
	if err := u.f.Truncate(size); err != nil {
		u.ss.log.Error("truncate upload", "action", "upload", "path", u.vpath, "err", err)
		u.setErr(errInternal)
		return errInternal
	}
	return nil
}

// ReadAt serves reads on a read-write handle from the partial file.
func (u *upload) ReadAt(p []byte, off int64) (int, error) {
	u.rw.RLock()
	defer u.rw.RUnlock()
	if err := u.failure(); err != nil {
		return 0, err
	}
	return u.f.ReadAt(p, off)
}

func (u *upload) stat() (os.FileInfo, error) {
	u.rw.RLock()
	defer u.rw.RUnlock()
	if err := u.failure(); err != nil {
		return nil, err
	}
	fi, err := u.f.Stat()
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: u.name, size: fi.Size(), mode: 0o640, mtime: fi.ModTime()}, nil
}

// setErr records the first failure.
func (u *upload) setErr(err error) {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	if u.err == nil {
		u.err = err
	}
}

// failure is why the upload can no longer be used, or nil. Callers hold rw.
func (u *upload) failure() error {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	if u.err == nil && u.done {
		return os.ErrClosed
	}
	return u.err
}

// TransferError is called by pkg/sftp when the session ends with the file
// still open (connection dropped, client killed, server shutting down): the
// upload is incomplete and is discarded.
func (u *upload) TransferError(err error) {
	u.ss.log.Info("upload interrupted", "action", "upload", "path", u.vpath, "err", err)
	u.abort(errAborted)
}

// abort discards the upload now; later writes and Close report err.
func (u *upload) abort(err error) {
	u.setErr(err)
	u.discard()
}

func (u *upload) discard() {
	u.rw.Lock()
	defer u.rw.Unlock()
	u.discardLocked()
}

func (u *upload) discardLocked() {
	if u.done {
		return
	}
	u.done = true
	u.f.Close()
	if err := u.ss.root.Remove(u.partial); err != nil && !errors.Is(err, os.ErrNotExist) {
		u.ss.log.Error("remove partial upload", "path", u.vpath, "err", err)
	}
}

// Close commits the upload: the partial file is synced and renamed over
// incoming/<name> (atomic on the same file system), and only then is the
// OnUpload callback called. pkg/sftp sends Close's error to the client, so
// a discarded upload fails visibly at close too.
func (u *upload) Close() error {
	defer u.ss.untrack(u)
	committed, err := u.commit()
	if committed {
		// Outside the lock: the callback is the caller's code.
		u.ss.srv.uploaded(u.ss.tenant, u.name)
	}
	return err
}

func (u *upload) commit() (bool, error) {
	u.rw.Lock()
	defer u.rw.Unlock()
	if u.done {
		return false, u.failure()
	}
	if err := u.failure(); err != nil {
		u.discardLocked()
		return false, err
	}
	fail := func(what string, err error) (bool, error) {
		u.ss.log.Error("commit upload: "+what, "action", "upload", "path", u.vpath, "err", err)
		u.setErr(errInternal)
		u.discardLocked()
		return false, errInternal
	}
	if err := u.f.Sync(); err != nil {
		return fail("sync", err)
	}
	size, _ := u.f.Seek(0, io.SeekEnd)
	if err := u.f.Close(); err != nil {
		return fail("close", err)
	}
	if err := u.ss.root.Rename(u.partial, u.rel); err != nil {
		return fail("rename", err)
	}
	u.done = true
	// Make the rename durable: the client is about to be told "done".
	if d, err := u.ss.root.Open(incomingDir); err == nil {
		d.Sync()
		d.Close()
	}
	u.ss.log.Info("upload complete", "action", "upload", "path", u.vpath, "size", size)
	return true, nil
}
