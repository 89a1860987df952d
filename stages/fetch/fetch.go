// Package fetch is the first stage: it copies each file, from a local path
// or the tenant's SFTP store, into content-addressed staging while hashing
// it, so later stages, re-runs and backfills never touch the store again.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "fetch",
		Summary: "Copies the file (local path or SFTP /incoming) into staging under its SHA-256, rejecting files over the tenant's size limit before reading them.",
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

// Meta is what staging keeps beside each received file, so a backfill can
// find a tenant's files by logical date without the SFTP store.
type Meta struct {
	Tenant      string    `json:"tenant"`
	Name        string    `json:"name"`
	SHA256      string    `json:"sha256"`
	Size        int64     `json:"size"`
	LogicalDate string    `json:"logical_date"`
	ReceivedAt  time.Time `json:"received_at"`
	RunID       int64     `json:"run_id"`
}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	limit := run.Tenant.MaxFileBytes
	dir := filepath.Join(run.StagingDir, run.Tenant.ID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch: create staging: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch: create staging file: %w", err)
	}
	kept := false
	defer func() {
		if !kept {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := newHashWriter(sha256.New())
	defer h.Close()
	// The limit is checked before reading where the size is known, and
	// enforced while copying in every case: a file may grow after List.
	w := &limitWriter{w: io.MultiWriter(h, tmp), left: limit}
	var n int64
	if f.Remote {
		if run.Store == nil {
			return pipeline.Stats{}, errors.New("fetch: remote file without a store")
		}
		if f.Size > limit {
			return pipeline.Stats{}, tooLarge(f.Size, limit)
		}
		n, err = run.Store.Fetch(ctx, f.Source, w)
	} else {
		var src *os.File
		src, err = os.Open(f.Source)
		if err != nil {
			return pipeline.Stats{}, fmt.Errorf("fetch: %w", err)
		}
		defer src.Close()
		if st, serr := src.Stat(); serr == nil {
			if st.Size() > limit {
				return pipeline.Stats{}, tooLarge(st.Size(), limit)
			}
			if f.ModTime.IsZero() {
				f.ModTime = st.ModTime()
			}
		}
		// Large reads (os.File's own WriteTo would copy 32 KiB at a time,
		// each a hand-over to the hashing goroutine).
		n, err = io.CopyBuffer(w, struct{ io.Reader }{src}, make([]byte, hashChunk))
	}
	if w.over {
		return pipeline.Stats{}, tooLarge(limit+1, limit)
	}
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch: %w", err) // the runner names the file; the store, its path
	}
	sum := hex.EncodeToString(h.Sum())
	// The stages read the bytes under this run's name while the copy is
	// made durable under its content's name in the background (see keep).
	f.Size, f.SHA256, f.Staged = n, sum, tmp.Name()
	f.Temp = append(f.Temp, tmp.Name())
	meta := Meta{Tenant: run.Tenant.ID, Name: f.Name, SHA256: sum, Size: n,
		LogicalDate: run.LogicalDate.Format(time.DateOnly), ReceivedAt: time.Now().UTC(), RunID: run.ID}
	kept = true
	f.KeepInBackground(func() error { return keep(tmp, filepath.Join(dir, sum), meta) })
	return pipeline.Stats{RowsIn: 1, RowsOut: 1}, nil
}

// keep makes the received copy tmp durable as final, the name later runs
// and backfills look for, and adds meta to final's reception log. final
// appears only once its bytes are on disk, so a crash cannot leave a torn
// file under a content's name; it is a second link to tmp's bytes, which
// the stages read under tmp's name meanwhile (the runner removes that name
// when the file is done).
func keep(tmp *os.File, final string, meta Meta) error {
	defer tmp.Close()
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fetch: sync staging: %w", err)
	}
	// A link under a name of its own, then a rename over final: the same
	// content received again replaces its earlier copy, as one step.
	link := tmp.Name() + ".keep"
	os.Remove(link)
	if err := os.Link(tmp.Name(), link); err != nil {
		return fmt.Errorf("fetch: store in staging: %w", err)
	}
	if err := os.Rename(link, final); err != nil {
		os.Remove(link)
		return fmt.Errorf("fetch: store in staging: %w", err)
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("fetch: write staging metadata: %w", err)
	}
	// One line per reception: the same bytes may arrive on several dates.
	mf, err := os.OpenFile(final+".meta.jsonl", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("fetch: write staging metadata: %w", err)
	}
	_, werr := mf.Write(append(b, '\n'))
	if werr == nil {
		werr = mf.Sync()
	}
	if cerr := mf.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("fetch: write staging metadata: %w", werr)
	}
	// The names (the copy's, the log's) are entries of the directory,
	// durable once it is synced too.
	dir, err := os.Open(filepath.Dir(final))
	if err != nil {
		return fmt.Errorf("fetch: sync staging: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("fetch: sync staging: %w", err)
	}
	return nil
}

func tooLarge(size, limit int64) error {
	return pipeline.Reject(schemas.CodeFileTooLarge,
		"the file is %d bytes, over this account's limit of %d bytes; split it or ask us to raise the limit", size, limit)
}

// limitWriter fails once more than left bytes were written.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, errors.New("file over the size limit")
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}
