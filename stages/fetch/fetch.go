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
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	h := sha256.New()
	// The limit is checked before reading where the size is known, and
	// enforced while copying in every case: a file may grow after List.
	w := &limitWriter{w: io.MultiWriter(tmp, h), left: limit}
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
		n, err = io.Copy(w, src)
	}
	if w.over {
		return pipeline.Stats{}, tooLarge(limit+1, limit)
	}
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	if err := tmp.Sync(); err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch: sync staging: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	final := filepath.Join(dir, sum)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return pipeline.Stats{}, fmt.Errorf("fetch: store in staging: %w", err)
	}
	f.Size, f.SHA256, f.Staged = n, sum, final
	meta := Meta{Tenant: run.Tenant.ID, Name: f.Name, SHA256: sum, Size: n,
		LogicalDate: run.LogicalDate.Format(time.DateOnly), ReceivedAt: time.Now().UTC(), RunID: run.ID}
	if b, err := json.Marshal(meta); err == nil {
		// One line per reception: the same bytes may arrive on several dates.
		mf, err := os.OpenFile(final+".meta.jsonl", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return pipeline.Stats{}, fmt.Errorf("fetch: write staging metadata: %w", err)
		}
		_, werr := mf.Write(append(b, '\n'))
		if cerr := mf.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return pipeline.Stats{}, fmt.Errorf("fetch: write staging metadata: %w", werr)
		}
	}
	return pipeline.Stats{RowsIn: 1, RowsOut: 1}, nil
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
