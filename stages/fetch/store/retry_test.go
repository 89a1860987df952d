package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/roster-hr/roster/pipeline"
)

// flaky fails its first calls with errs, in order, then succeeds.
type flaky struct {
	errs    []error
	calls   int
	partial bool // Fetch writes a byte before failing
}

func (f *flaky) next() error {
	f.calls++
	if len(f.errs) == 0 {
		return nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return err
}

func (f *flaky) List(context.Context) ([]pipeline.RemoteFile, error) {
	if err := f.next(); err != nil {
		return nil, err
	}
	return []pipeline.RemoteFile{{Name: "a.csv"}}, nil
}

func (f *flaky) Fetch(_ context.Context, _ string, w io.Writer) (int64, error) {
	err := f.next()
	if err != nil && f.partial {
		w.Write([]byte("x"))
		return 1, err
	}
	if err != nil {
		return 0, err
	}
	n, err := w.Write([]byte("data"))
	return int64(n), err
}

func (f *flaky) Finish(context.Context, string, bool) error      { return f.next() }
func (f *flaky) PutReport(context.Context, string, []byte) error { return f.next() }

func TestRetry(t *testing.T) {
	ctx := context.Background()
	lost := fmt.Errorf("store: sftp: list: %w", sftp.ErrSSHFxConnectionLost)
	t.Run("transient then success", func(t *testing.T) {
		f := &flaky{errs: []error{lost, ErrConnection}}
		files, err := Retry(f, 3, time.Millisecond).List(ctx)
		if err != nil || len(files) != 1 || f.calls != 3 {
			t.Fatalf("List = %v, %v after %d calls", files, err, f.calls)
		}
	})
	t.Run("attempts bounded", func(t *testing.T) {
		f := &flaky{errs: []error{lost, lost, lost, lost, lost}}
		if _, err := Retry(f, 3, time.Millisecond).List(ctx); !errors.Is(err, sftp.ErrSSHFxConnectionLost) || f.calls != 3 {
			t.Fatalf("List: %v after %d calls", err, f.calls)
		}
	})
	t.Run("answers are final", func(t *testing.T) {
		for _, e := range []error{fs.ErrNotExist, fs.ErrPermission, &sftp.StatusError{Code: 4}, ErrHostKey, errClosed} {
			f := &flaky{errs: []error{fmt.Errorf("x: %w", e)}}
			if _, err := Retry(f, 3, time.Millisecond).List(ctx); err == nil || f.calls != 1 {
				t.Fatalf("%v: retried (%d calls)", e, f.calls)
			}
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		f := &flaky{errs: []error{lost, lost}}
		if _, err := Retry(f, 5, time.Millisecond).List(cctx); err == nil || f.calls != 1 {
			t.Fatalf("retried under a cancelled context (%d calls)", f.calls)
		}
		f = &flaky{errs: []error{context.Canceled, context.Canceled}}
		if _, err := Retry(f, 5, time.Millisecond).List(ctx); err == nil || f.calls != 1 {
			t.Fatalf("retried a cancellation (%d calls)", f.calls)
		}
		// Cancelled during the backoff.
		cctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		f = &flaky{errs: []error{lost, lost}}
		start := time.Now()
		if _, err := Retry(f, 5, time.Hour).List(cctx); err == nil || f.calls != 1 || time.Since(start) > 5*time.Second {
			t.Fatalf("backoff ignored the context (%d calls)", f.calls)
		}
	})
	t.Run("fetch retried only before writing", func(t *testing.T) {
		f := &flaky{errs: []error{lost}}
		var buf bytes.Buffer
		n, err := Retry(f, 3, time.Millisecond).Fetch(ctx, "a.csv", &buf)
		if err != nil || n != 4 || buf.String() != "data" || f.calls != 2 {
			t.Fatalf("Fetch = %d %q, %v after %d calls", n, buf.String(), err, f.calls)
		}
		f = &flaky{errs: []error{lost}, partial: true}
		buf.Reset()
		if _, err := Retry(f, 3, time.Millisecond).Fetch(ctx, "a.csv", &buf); err == nil || f.calls != 1 {
			t.Fatalf("Fetch retried after a partial write (%d calls)", f.calls)
		}
	})
	t.Run("finish not retried, report retried", func(t *testing.T) {
		f := &flaky{errs: []error{lost}}
		if err := Retry(f, 3, time.Millisecond).Finish(ctx, "a.csv", true); err == nil || f.calls != 1 {
			t.Fatalf("Finish: %v after %d calls", err, f.calls)
		}
		f = &flaky{errs: []error{lost}}
		if err := Retry(f, 3, time.Millisecond).PutReport(ctx, "a", nil); err != nil || f.calls != 2 {
			t.Fatalf("PutReport: %v after %d calls", err, f.calls)
		}
	})
}
