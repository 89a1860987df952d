package pipeline

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/roster-hr/roster/schemas"
)

// FileStatus is a file's outcome, as in the ledger and --json output.
type FileStatus string

// File statuses.
const (
	StatusProcessing FileStatus = "processing"
	StatusApplied    FileStatus = "applied"
	StatusRejected   FileStatus = "rejected"
	StatusDuplicate  FileStatus = "duplicate"
	StatusPlanned    FileStatus = "planned" // dry run
	StatusFailed     FileStatus = "failed"  // system failure: taken again next time
)

// Counts are a file's actions, each accepted row counted once.
// The db names are run_files' columns (FileRecord reads them).
type Counts struct {
	Rows        int `db:"rows" json:"rows"`
	Created     int `db:"created" json:"created"`
	Updated     int `db:"updated" json:"updated"`
	Deactivated int `db:"deactivated" json:"deactivated"`
	Reactivated int `db:"reactivated" json:"reactivated"`
	Scheduled   int `db:"scheduled" json:"scheduled"`
	Unchanged   int `db:"unchanged" json:"unchanged"`
}

// Count adds one row's action (schemas.Act…; "" is unchanged).
func (c *Counts) Count(action string) {
	switch action {
	case schemas.ActCreate:
		c.Created++
	case schemas.ActUpdate:
		c.Updated++
	case schemas.ActDeactivate:
		c.Deactivated++
	case schemas.ActReactivate:
		c.Reactivated++
	case schemas.ActSchedule:
		c.Scheduled++
	default:
		c.Unchanged++
	}
}

// File is one uploaded file on its way through the stages. Each stage reads
// what the stages before it left here and adds its own output; nothing else
// is shared between stages.
type File struct {
	ID      int64     // run_files.id, 0 in a dry run
	Name    string    // base name as uploaded
	Source  string    // where fetch takes it from: a local path, or the name in the store's /incoming
	Remote  bool      // Source names a file in the tenant's SFTP store
	ModTime time.Time // upload time, for ordering
	Order   int       // position among the run's inputs (the --file order)

	// fetch
	Size   int64
	SHA256 string
	Staged string // the bytes as received, in staging (a name of this run's; see Kept)
	// decrypt
	Plain     string // the plaintext; equals Staged when the file was not encrypted
	Encrypted bool
	// parse
	Kind    schemas.Kind
	Format  string           // "csv" or "json"
	Columns []schemas.Column // template columns present, in batch order after _row
	Batches []arrow.Record   // parse: all-text; normalize: typed
	Rows    int
	// normalize / validate: row indexes (0-based positions, not source rows)
	Rejected RowSet            // rows rejected whole
	Skip     map[string]RowSet // per column: rows applied without that field
	// diff
	Plan *Plan
	// Pending are departments the file asks to deactivate that still had
	// active users or sub-departments when it was diffed: FILE_RULES.md
	// judges them at the end of the run (apply settles them).
	Pending []PendingDeactivation

	Issues  Issues
	Status  FileStatus
	Err     error // the file-level failure, if any
	Counts  Counts
	Stages  []StageResult
	Applied bool
	// Temp lists files the stages made for this file only (the plaintext of
	// an encrypted upload); the runner removes them when the file is done.
	Temp []string

	prefetch map[string]*prefetch // by stage name: reads started ahead
	specs    map[string]io.Closer // by stage name: work started ahead (Speculator)
	keeping  chan error           // fetch's background keep, when one runs
}

// UploadKey identifies one upload of a remote file: its name, upload time
// and content. Empty for local files.
func (f *File) UploadKey() string {
	if !f.Remote || f.SHA256 == "" {
		return ""
	}
	return f.Name + "|" + f.ModTime.UTC().Format(time.RFC3339Nano) + "|" + f.SHA256
}

// Done reports whether the file has reached an outcome that stops the
// remaining per-file stages (only "always" stages such as report still run).
func (f *File) Done() bool {
	switch f.Status {
	case StatusRejected, StatusDuplicate, StatusFailed:
		return true
	}
	return false
}

// KeepInBackground runs keep, which makes the staged copy durable under
// the name later runs and backfills find it by, beside the stages that read
// it meanwhile (fsync of a 100 MB file was 50-80 ms on a quiet disk here,
// ~0.7 s while PostgreSQL's dirty pages were being written back, and the
// stages after fetch need only the bytes, not their durability).
func (f *File) KeepInBackground(keep func() error) {
	f.keeping = make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				f.keeping <- fmt.Errorf("keep the staged copy: panic: %v\n%s", r, debug.Stack())
			}
		}()
		f.keeping <- keep()
	}()
}

// Kept waits for the keep started by KeepInBackground, if any, and returns
// its error, the same on every call. apply calls it before it commits, so
// no file is recorded applied whose received bytes a crash could still
// lose; the runner calls it for every file before the run ends.
func (f *File) Kept() error {
	if f.keeping == nil {
		return nil
	}
	err := <-f.keeping
	f.keeping <- err
	return err
}

// ReleaseBatches frees the file's Arrow memory, drops the staged copy
// from the page cache and removes its temporary files, once the staged
// copy is kept.
func (f *File) ReleaseBatches() {
	if f.Kept() == nil && f.Staged != "" {
		dropCache(f.Staged) // read by no later stage; gone once Temp is removed below
	}
	for _, b := range f.Batches {
		b.Release()
	}
	f.Batches = nil
	if f.Plan != nil {
		f.Plan.Release()
	}
	for _, p := range f.Temp {
		os.Remove(p)
	}
	f.Temp = nil
}

// PendingDeactivation is one department deactivation decided at the end
// of the run.
type PendingDeactivation struct {
	Row  int
	Key  string
	Name string
}

// StageResult is one stage's record for one file.
type StageResult struct {
	Stage      string  `json:"stage"`
	RowsIn     int64   `json:"rows_in"`
	RowsOut    int64   `json:"rows_out"`
	DurationMS float64 `json:"duration_ms"`
	Status     string  `json:"status"`
	Error      string  `json:"error,omitempty"`
}

// RowSet is a set of row indexes, as a bitmap.
type RowSet struct{ bits []uint64 }

// Add puts row i in the set.
func (s *RowSet) Add(i int) {
	w := i >> 6
	for len(s.bits) <= w {
		s.bits = append(s.bits, 0)
	}
	s.bits[w] |= 1 << (uint(i) & 63)
}

// Clone returns a copy of the set that later Adds to either do not touch.
func (s RowSet) Clone() RowSet { return RowSet{bits: slices.Clone(s.bits)} }

// Has reports whether row i is in the set.
func (s *RowSet) Has(i int) bool {
	w := i >> 6
	return w < len(s.bits) && s.bits[w]&(1<<(uint(i)&63)) != 0
}

// SkipField marks that row i is applied without column col.
func (f *File) SkipField(col string, i int) {
	if f.Skip == nil {
		f.Skip = map[string]RowSet{}
	}
	s := f.Skip[col]
	s.Add(i)
	f.Skip[col] = s
}

// Skipped reports whether row i is applied without column col.
func (f *File) Skipped(col string, i int) bool {
	s, ok := f.Skip[col]
	return ok && s.Has(i)
}

// prefetch is one read started ahead by a Prefetcher.
type prefetch struct {
	done   chan struct{}
	val    any
	err    error
	cancel context.CancelFunc
}

// startPrefetch runs p.Prefetch in the background for stage.
func (f *File) startPrefetch(ctx context.Context, stage string, p Prefetcher, run *Run) {
	ctx, cancel := context.WithCancel(ctx)
	pf := &prefetch{done: make(chan struct{}), cancel: cancel}
	if f.prefetch == nil {
		f.prefetch = map[string]*prefetch{}
	}
	f.prefetch[stage] = pf
	go func() {
		defer close(pf.done)
		// A panic here would end the process: it becomes the stage's
		// error instead, as safeProcess does for Process.
		defer func() {
			if r := recover(); r != nil {
				pf.val, pf.err = nil, fmt.Errorf("stage %s panicked reading ahead: %v\n%s", stage, r, debug.Stack())
			}
		}()
		pf.val, pf.err = p.Prefetch(ctx, run)
	}()
}

// Prefetched waits for what the runner read ahead for stage and hands it
// over (once); ok is false when nothing was read ahead, and the stage reads
// for itself.
func (f *File) Prefetched(ctx context.Context, stage string) (val any, ok bool, err error) {
	pf := f.prefetch[stage]
	if pf == nil {
		return nil, false, nil
	}
	delete(f.prefetch, stage)
	defer pf.cancel()
	select {
	case <-pf.done:
		return pf.val, true, pf.err
	case <-ctx.Done():
		<-pf.done
		return nil, true, ctx.Err()
	}
}

// startSpeculation asks stage's Speculator to start on f ahead.
func (f *File) startSpeculation(ctx context.Context, stage string, s Speculator, run *Run) {
	var h io.Closer
	func() {
		// A panic here would end the process: speculating is an
		// optimisation, so the stage runs as if it had not been asked.
		defer func() {
			if r := recover(); r != nil {
				run.Log.Error("speculation panicked; the stage runs without it", "stage", stage, "panic", r, "stack", string(debug.Stack()))
				h = nil
			}
		}()
		h = s.Speculate(ctx, run, f)
	}()
	if h == nil {
		return
	}
	if f.specs == nil {
		f.specs = map[string]io.Closer{}
	}
	f.specs[stage] = h
}

// Speculated hands over (once) the work the runner had stage start ahead
// on f (see Speculator), or nil; the caller closes it.
func (f *File) Speculated(stage string) io.Closer {
	h := f.specs[stage]
	delete(f.specs, stage)
	return h
}

// dropSpeculations closes the work started ahead that nobody collected.
func (f *File) dropSpeculations() {
	for name, h := range f.specs {
		_ = h.Close() // undone: nothing of it is kept
		delete(f.specs, name)
	}
}

// dropPrefetches cancels the reads nobody collected and waits for them, so
// no query outlives the run (or holds a connection the next file needs).
func (f *File) dropPrefetches() {
	for name, pf := range f.prefetch {
		pf.cancel()
		<-pf.done
		delete(f.prefetch, name)
	}
}
