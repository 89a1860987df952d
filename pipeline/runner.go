package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"time"

	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/schemas"
)

// Triggers of a run.
const (
	TriggerScheduled = "scheduled"
	TriggerManual    = "manual"
	TriggerBackfill  = "backfill"
)

// Run statuses.
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunPartial   = "partial" // every file applied, some with row errors
	RunFailed    = "failed"
)

// tenantLockSpace is the first key of the session advisory lock that makes a
// tenant's runs one at a time, across processes and replicas. A session lock
// dies with its connection, so a killed process never blocks the next run.
const tenantLockSpace = 7_061_2001

// Runner executes a pipeline for one tenant at a time and records every
// run, file and stage in the ledger.
type Runner struct {
	DB         *sqlx.DB
	Registry   *Registry
	Spec       []byte // pipeline YAML; nil for the default
	StagingDir string
	Log        *slog.Logger
	Now        func() time.Time
	Notify     Notifier // e-mails the technical contact; nil: none
}

// Request is one run to make.
type Request struct {
	Tenant      string
	Trigger     string
	LogicalDate time.Time // zero: today in the tenant's time zone
	Files       []*File   // inputs: local paths, or names in Store's /incoming
	// Discover, when set, finds the inputs once the tenant lock is held, so
	// two replicas never both act on one listing. No files: ErrNoFiles.
	Discover func(ctx context.Context) ([]*File, error)
	Store    Store
	DryRun   bool
	// AllowMassDeactivation: see Run.
	AllowMassDeactivation bool
	Overrides             map[string]Options
	BeforeUsers           func(ctx context.Context, tx *sqlx.Tx) error
	KeyPassphrase         []byte
}

// Result is a finished run.
type Result struct {
	RunID        int64
	Tenant       string
	Status       string
	DryRun       bool
	FailureClass Class
	Reason       string
	Files        []*File
}

// Run executes the pipeline over req.Files. An error means the run could
// not happen at all (unknown tenant, tenant busy, database down); a run that
// happened returns its Result, whatever became of its files.
func (rn *Runner) Run(ctx context.Context, req Request) (*Result, error) {
	log := rn.Log
	if log == nil {
		log = slog.Default()
	}
	now := time.Now
	if rn.Now != nil {
		now = rn.Now
	}
	tenant, err := Tenants{rn.DB}.Get(ctx, req.Tenant)
	if err != nil {
		return nil, err
	}
	stages, err := Build(rn.Registry, orDefault(rn.Spec), req.Overrides)
	if err != nil {
		return nil, err
	}
	unlock, err := LockTenant(ctx, rn.DB, tenant.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !req.DryRun {
		if err := FailStaleRuns(ctx, rn.DB, tenant.ID); err != nil {
			return nil, err
		}
	}
	if req.Discover != nil {
		files, err := req.Discover(ctx)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, ErrNoFiles
		}
		req.Files = files
	}

	var ledger Ledger = PGLedger{DB: rn.DB}
	if req.DryRun {
		ledger = DryLedger{ledger}
	}
	run := &Run{
		Tenant: tenant, Trigger: req.Trigger, LogicalDate: req.LogicalDate, DryRun: req.DryRun,
		AllowMassDeactivation: req.AllowMassDeactivation, DB: rn.DB, Ledger: ledger, Store: req.Store,
		StagingDir: rn.StagingDir, Mem: memory.NewGoAllocator(), BeforeUsers: req.BeforeUsers,
		KeyPassphrase: req.KeyPassphrase, Notify: rn.Notify,
	}
	if run.Trigger == "" {
		run.Trigger = TriggerManual
	}
	if run.LogicalDate.IsZero() {
		run.LogicalDate = tenant.Today(now())
	}
	if run.StagingDir == "" {
		run.StagingDir = filepath.Join(os.TempDir(), "roster-staging")
	}
	if run.ID, err = ledger.StartRun(ctx, run); err != nil {
		return nil, err
	}
	run.Log = log.With("tenant", tenant.ID, "run", run.ID)
	res := &Result{RunID: run.ID, Tenant: tenant.ID, DryRun: req.DryRun, Files: req.Files}
	defer func() {
		for _, f := range req.Files {
			f.dropSpeculations()
			f.dropPrefetches()
			f.ReleaseBatches()
		}
	}()

	last, err := ledger.LastApplied(ctx, tenant.ID)
	if err != nil {
		return rn.finish(ctx, run, res, err)
	}
	for i, f := range req.Files {
		f.Order = i
		f.Status = StatusProcessing
		if err := ledger.AddFile(ctx, run.ID, tenant.ID, f); err != nil {
			return rn.finish(ctx, run, res, err)
		}
	}

	// Phase one: each file through the stages that need no order (fetch,
	// decrypt, parse…), which also tells each file's kind.
	split := len(stages)
	for i, st := range stages {
		if st.Spec.Ordered || st.Spec.Scope == PerRun {
			split = i
			break
		}
	}
	if len(req.Files) == 1 {
		for _, st := range stages[split:] {
			if p, ok := st.Stage.(Prefetcher); ok && st.Spec.Scope == PerFile {
				req.Files[0].startPrefetch(ctx, st.Spec.Name, p, run)
			}
		}
	}
	for _, f := range req.Files {
		for _, st := range stages[:split] {
			if err := rn.fileStage(ctx, run, st, f, last); err != nil {
				return rn.finish(ctx, run, res, err)
			}
		}
		if f.Done() {
			f.dropPrefetches() // rejected or a duplicate: nobody will collect it
		}
	}
	// Departments before users; within a kind, upload order.
	ordered := append([]*File(nil), req.Files...)
	sort.SliceStable(ordered, func(a, b int) bool {
		x, y := ordered[a], ordered[b]
		if kindRank(x.Kind) != kindRank(y.Kind) {
			return kindRank(x.Kind) < kindRank(y.Kind)
		}
		// Local files (--file) keep the order they were given in; uploads
		// go by upload time, then name.
		if !x.Remote && !y.Remote {
			return x.Order < y.Order
		}
		if !x.ModTime.Equal(y.ModTime) {
			return x.ModTime.Before(y.ModTime)
		}
		if x.Order != y.Order {
			return x.Order < y.Order
		}
		return x.Name < y.Name
	})
	res.Files = ordered
	var runStages []Configured
	var broken *File
	for _, f := range ordered {
		if broken != nil && !f.Done() {
			// After a system failure the files behind it wait: applying
			// users whose departments failed would apply them out of order.
			f.Status = StatusFailed
			f.Err = fmt.Errorf("not processed: %s failed before it; it stays in /incoming for the next run", broken.Name)
		}
		// The same content twice in one run: the second is a duplicate of
		// the first once that one applied cleanly.
		if a, ok := last[string(f.Kind)]; ok && f.Status == StatusProcessing && a.Clean && a.SHA256 == f.SHA256 {
			markDuplicate(f, string(f.Kind))
		}
		ahead := stages[split:]
		for k, st := range ahead {
			if st.Spec.Scope == PerRun || st.Spec.Always {
				continue
			}
			// In a run of one file, the next stage may start on the file
			// beside this one (Speculator): nothing else is applied first.
			if k+1 < len(ahead) && len(req.Files) == 1 && !req.DryRun && f.Status == StatusProcessing {
				if s, ok := ahead[k+1].Stage.(Speculator); ok && ahead[k+1].Spec.Scope == PerFile {
					f.startSpeculation(ctx, ahead[k+1].Spec.Name, s, run)
				}
			}
			if err := rn.fileStage(ctx, run, st, f, last); err != nil {
				return rn.finish(ctx, run, res, err)
			}
		}
		f.dropSpeculations()
		f.dropPrefetches()
		if err := rn.settle(ctx, run, f); err != nil {
			return rn.finish(ctx, run, res, err)
		}
		if f.Status == StatusFailed && broken == nil {
			broken = f
		}
		if f.Status == StatusApplied {
			last[string(f.Kind)] = AppliedFile{SHA256: f.SHA256, Clean: f.Issues.Errors == 0}
		}
	}
	// Work judged at the end of the run, once every file is applied.
	for _, st := range stages[split:] {
		if fin, ok := st.Stage.(RunFinisher); ok && st.Spec.Scope == PerFile {
			if err := fin.FinishRun(ctx, run, ordered); err != nil {
				return rn.finish(ctx, run, res, fmt.Errorf("stage %s at the end of the run: %w", st.Spec.Name, err))
			}
		}
	}
	// Then what every file gets whatever became of it: its report.
	for _, f := range ordered {
		for _, st := range stages[split:] {
			if st.Spec.Scope == PerFile && st.Spec.Always {
				if err := rn.fileStage(ctx, run, st, f, last); err != nil {
					return rn.finish(ctx, run, res, err)
				}
			}
		}
		f.ReleaseBatches()
	}
	for _, st := range stages[split:] {
		if st.Spec.Scope == PerRun {
			runStages = append(runStages, st)
		}
	}
	for _, st := range runStages {
		started := time.Now()
		stats, err := safeFinish(ctx, st, run, ordered)
		sr := stageResult(st.Spec.Name, stats, started, err)
		if lerr := ledger.RecordStage(ctx, run.ID, 0, sr); lerr != nil {
			return rn.finish(ctx, run, res, lerr)
		}
		if err != nil && !errors.Is(err, ErrSkipped) {
			run.Log.Error("run stage failed", "stage", st.Spec.Name, "err", err)
			return rn.finish(ctx, run, res, fmt.Errorf("stage %s: %w", st.Spec.Name, err))
		}
	}
	return rn.finish(ctx, run, res, nil)
}

func orDefault(spec []byte) []byte {
	if len(spec) == 0 {
		return DefaultSpec()
	}
	return spec
}

func kindRank(k schemas.Kind) int {
	switch k {
	case schemas.KindDepartments:
		return 0
	case schemas.KindUsers:
		return 1
	}
	return 2
}

// fileStage runs one per-file stage on f and records it. It returns an
// error only when the ledger itself fails; what happens to the file is
// recorded on f.
func (rn *Runner) fileStage(ctx context.Context, run *Run, st Configured, f *File, last map[string]AppliedFile) error {
	if f.Done() && !st.Spec.Always {
		return nil
	}
	if f.Status == StatusPlanned && !st.Spec.Always {
		return nil
	}
	started := time.Now()
	stats, err := safeProcess(ctx, st, run, f)
	sr := stageResult(st.Spec.Name, stats, started, err)
	f.Stages = append(f.Stages, sr)
	if lerr := run.Ledger.RecordStage(ctx, run.ID, f.ID, sr); lerr != nil {
		return lerr
	}
	if errors.Is(err, ErrSkipped) {
		err = nil
	}
	if err != nil {
		f.Err = err
		var rej *Rejection
		if errors.As(err, &rej) {
			f.Status = StatusRejected
			f.Issues.Add(Issue{Code: rej.Code, Severity: SeverityError, Message: rej.Message})
			run.Log.Info("file rejected", "file", f.Name, "stage", st.Spec.Name, "code", rej.Code)
		} else {
			f.Status = StatusFailed
			run.Log.Error("file failed", "file", f.Name, "stage", st.Spec.Name, "err", err)
		}
		return nil
	}
	// This very upload was applied already (the process died after the
	// commit, before moving it): finish the move, never apply it again.
	if key := f.UploadKey(); key != "" && f.Status == StatusProcessing && f.Kind == "" {
		runID, err := run.Ledger.AppliedUpload(ctx, run.Tenant.ID, key)
		if err != nil {
			return err
		}
		if runID != 0 {
			f.Status = StatusDuplicate
			f.Issues.Add(Issue{Code: schemas.CodeDuplicateFile, Severity: SeverityInfo,
				Message: fmt.Sprintf("this upload was already applied by run %d; it was not applied again", runID)})
			return nil
		}
	}
	// The duplicate rule needs only the checksum: content equal to the last
	// cleanly applied file of a kind is that kind, and changes nothing.
	if f.SHA256 != "" && f.Status == StatusProcessing && f.Kind == "" {
		for kind, a := range last {
			if a.SHA256 == f.SHA256 && a.Clean {
				markDuplicate(f, kind)
			}
		}
	}
	return nil
}

func markDuplicate(f *File, kind string) {
	f.Status = StatusDuplicate
	f.Kind = schemas.Kind(kind)
	f.Issues.Add(Issue{Code: schemas.CodeDuplicateFile, Severity: SeverityInfo,
		Message: "this file is identical to the last " + kind + " file applied without errors; nothing would change, so it was not applied again"})
}

// settle records a file's outcome unless apply already did so inside its
// transaction.
func (rn *Runner) settle(ctx context.Context, run *Run, f *File) error {
	if f.Status == StatusProcessing {
		// Every stage ran but none decided: a pipeline without apply.
		f.Status = StatusPlanned
	}
	if err := f.Kept(); err != nil && !f.Applied && f.Status != StatusFailed {
		// apply waits for it itself; a file that never got there (a
		// duplicate, a rejected or planned one) still had its reception
		// to keep for backfills: the disk is the operator's to fix, and
		// the upload waits in /incoming for the next run.
		f.Status, f.Err = StatusFailed, err
	}
	if f.Applied || run.DryRun {
		return nil
	}
	tx, err := run.DB.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: record file %q: %w", f.Name, err)
	}
	if err := run.Ledger.RecordFile(ctx, tx, run.ID, f); err != nil {
		tx.Rollback() //nolint:errcheck
		return err
	}
	return tx.Commit()
}

// finish sets the run's final status from its files (or from err, a failure
// of the run itself) and records it.
func (rn *Runner) finish(ctx context.Context, run *Run, res *Result, err error) (*Result, error) {
	status, class, reason := RunSucceeded, Class(""), ""
	for _, f := range res.Files {
		switch {
		case f.Status == StatusFailed:
			status, class = RunFailed, ClassSystem
			reason = fmt.Sprintf("%s: %v", f.Name, f.Err)
		case f.Status == StatusRejected && class != ClassSystem:
			status, class = RunFailed, ClassData
			reason = fmt.Sprintf("%s: %v", f.Name, f.Err)
		case (f.Status == StatusApplied || f.Status == StatusPlanned) && f.Issues.Errors > 0 && status == RunSucceeded:
			status = RunPartial
		}
	}
	if err != nil {
		status, class, reason = RunFailed, ClassOf(err), err.Error()
	}
	res.Status, res.FailureClass, res.Reason = status, class, reason
	// Record the end even if the caller's context was cancelled (SIGTERM):
	// a run must never stay "running".
	if lerr := run.Ledger.FinishRun(context.WithoutCancel(ctx), run.ID, status, class, reason); lerr != nil {
		return res, errors.Join(err, lerr)
	}
	if run.Log != nil {
		run.Log.Info("run finished", "status", status, "files", len(res.Files))
	}
	return res, nil
}

func stageResult(name string, st Stats, started time.Time, err error) StageResult {
	sr := StageResult{Stage: name, RowsIn: st.RowsIn, RowsOut: st.RowsOut,
		DurationMS: float64(time.Since(started).Microseconds()) / 1000, Status: "ok"}
	if errors.Is(err, ErrSkipped) {
		sr.Status, sr.Error = "skipped", err.Error()
		return sr
	}
	if err != nil {
		sr.Error = err.Error()
		sr.Status = "failed"
		if ClassOf(err) == ClassData {
			sr.Status = "rejected"
		}
	}
	return sr
}

// safeProcess runs a stage and turns a panic into a system error: no input
// may crash the process, and a bug in one stage must not take a replica down.
func safeProcess(ctx context.Context, st Configured, run *Run, f *File) (stats Stats, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage %s panicked: %v\n%s", st.Spec.Name, p, debug.Stack())
		}
	}()
	return st.Stage.(Stage).Process(ctx, run, f)
}

func safeFinish(ctx context.Context, st Configured, run *Run, files []*File) (stats Stats, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stage %s panicked: %v\n%s", st.Spec.Name, p, debug.Stack())
		}
	}()
	return st.Stage.(RunStage).Finish(ctx, run, files)
}

// LockTenant takes the tenant's session advisory lock on a dedicated
// connection and returns the function that releases it. It fails with
// ErrTenantBusy when another process holds it.
func LockTenant(ctx context.Context, db *sqlx.DB, tenant string) (func(), error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock tenant %s: %w", tenant, err)
	}
	var ok bool
	if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, tenantLockSpace, tenant).Scan(&ok); err != nil {
		conn.Close()
		return nil, fmt.Errorf("lock tenant %s: %w", tenant, err)
	}
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("tenant %s: %w", tenant, ErrTenantBusy)
	}
	return func() {
		conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, hashtext($2))`, tenantLockSpace, tenant) //nolint:errcheck // closing the session releases it too
		conn.Close()
	}, nil
}

// FailStaleRuns marks the tenant's runs left "running" as failed. The
// caller holds the tenant lock, so no live process can be running them: the
// process that started them died (kill -9, power loss) before finishing.
func FailStaleRuns(ctx context.Context, db *sqlx.DB, tenant string) error {
	_, err := db.ExecContext(ctx, `WITH stale AS (
		UPDATE runs SET status = 'failed', failure_class = 'system', finished_at = now(),
			failure_reason = 'the process running it (host ' || host || ', pid ' || pid || ') stopped before the run finished; its files were not applied and will be taken again'
		WHERE tenant_id = $1 AND status = 'running' RETURNING id)
	UPDATE run_files SET status = 'failed', error = 'the run was interrupted'
	WHERE run_id IN (SELECT id FROM stale) AND status = 'processing'`, tenant)
	if err != nil {
		return fmt.Errorf("fail stale runs of %s: %w", tenant, err)
	}
	return nil
}
