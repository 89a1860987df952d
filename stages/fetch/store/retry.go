package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"github.com/roster-hr/roster/pipeline"
)

// ErrConnection is wrapped by SFTP errors caused by a broken connection;
// the next call reconnects.
var ErrConnection = errors.New("connection broken; the next call reconnects")

// isConnError reports whether err comes from the connection rather than
// from the server's answer.
func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, ErrConnection) ||
		errors.Is(err, sftp.ErrSSHFxConnectionLost) ||
		errors.Is(err, sftp.ErrSSHFxNoConnection) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &ne)
}

// IsTransient reports whether a Store error is worth a retry: a network
// failure, not an answer (missing file, permission, bad name), a host key
// or credential problem, a closed store or a cancelled context.
func IsTransient(err error) bool {
	var status *sftp.StatusError
	switch {
	case err == nil,
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrHostKey), errors.Is(err, errClosed),
		errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission),
		errors.Is(err, fs.ErrInvalid), errors.Is(err, fs.ErrExist),
		errors.As(err, &status):
		return false
	}
	return isConnError(err)
}

// Retry wraps s so that List, Fetch and PutReport are tried up to attempts
// times while they fail with a transient error (IsTransient), waiting
// backoff, then twice as long each time; never once ctx is done. Fetch is
// retried only if nothing reached w yet (w cannot be rewound). Finish is
// not retried: a rename whose reply was lost may have happened.
//
// Retries help an *SFTP, which reconnects on the next call after a broken
// connection.
func Retry(s pipeline.Store, attempts int, backoff time.Duration) pipeline.Store {
	return &retry{s: s, attempts: max(attempts, 1), backoff: backoff}
}

type retry struct {
	s        pipeline.Store
	attempts int
	backoff  time.Duration
}

// do runs op until it succeeds, fails for good, or attempts run out.
func (r *retry) do(ctx context.Context, op func() (retryable bool, err error)) error {
	wait := r.backoff
	for i := 1; ; i++ {
		again, err := op()
		if err == nil || !again || i >= r.attempts || ctx.Err() != nil || !IsTransient(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

func (r *retry) List(ctx context.Context) (files []pipeline.RemoteFile, err error) {
	err = r.do(ctx, func() (bool, error) {
		files, err = r.s.List(ctx)
		return true, err
	})
	return files, err
}

func (r *retry) Fetch(ctx context.Context, name string, w io.Writer) (n int64, err error) {
	err = r.do(ctx, func() (bool, error) {
		cw := &countWriter{w: w}
		n, err = r.s.Fetch(ctx, name, cw)
		return cw.n == 0, err
	})
	return n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (r *retry) Finish(ctx context.Context, name string, ok bool) error {
	return r.s.Finish(ctx, name, ok)
}

func (r *retry) PutReport(ctx context.Context, name string, body []byte) error {
	return r.do(ctx, func() (bool, error) {
		return true, r.s.PutReport(ctx, name, body)
	})
}
