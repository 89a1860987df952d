package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Ledger records runs, files, stages and issues. The PostgreSQL ledger is
// the real one; a dry run wraps it so that reads pass through and writes are
// dropped.
type Ledger interface {
	// StartRun records a new run as running and returns its id.
	StartRun(ctx context.Context, r *Run) (int64, error)
	// AddFile records a file of a run as processing and sets f.ID.
	AddFile(ctx context.Context, runID int64, tenant string, f *File) error
	// RecordFile writes a file's outcome and its issues through q, which is
	// the apply transaction when the file was applied, so the file and its
	// ledger entry commit together.
	RecordFile(ctx context.Context, tx *sqlx.Tx, runID int64, f *File) error
	// AddIssues records issues found for an already recorded file after
	// the fact (at the end of the run), with its updated counts, through tx.
	AddIssues(ctx context.Context, tx *sqlx.Tx, runID int64, f *File, issues []Issue) error
	// RecordStage records one stage's result for one file (fileID 0: the run).
	RecordStage(ctx context.Context, runID, fileID int64, res StageResult) error
	// FinishRun sets the final status of a run.
	FinishRun(ctx context.Context, runID int64, status string, class Class, reason string) error
	// AppliedUpload returns the run that applied this upload, or 0.
	AppliedUpload(ctx context.Context, tenant, key string) (int64, error)
	// LastApplied returns, per kind, the sha256 of the tenant's last applied
	// file of that kind and whether it applied without errors.
	LastApplied(ctx context.Context, tenant string) (map[string]AppliedFile, error)
}

// AppliedFile is the ledger's memory of the last applied file of a kind.
type AppliedFile struct {
	SHA256 string
	Clean  bool // applied without row errors
}

// PGLedger is the ledger in PostgreSQL.
type PGLedger struct{ DB *sqlx.DB }

// StartRun implements Ledger.
func (l PGLedger) StartRun(ctx context.Context, r *Run) (int64, error) {
	var id int64
	err := l.DB.QueryRowxContext(ctx, `INSERT INTO runs (tenant_id, trigger, logical_date, dry_run, host, pid)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		r.Tenant.ID, r.Trigger, r.LogicalDate, r.DryRun, hostname(), pid()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ledger: start run: %w", err)
	}
	return id, nil
}

// AddFile implements Ledger.
func (l PGLedger) AddFile(ctx context.Context, runID int64, tenant string, f *File) error {
	err := l.DB.QueryRowxContext(ctx, `INSERT INTO run_files (run_id, tenant_id, name, sha256, size, status)
		VALUES ($1, $2, $3, $4, $5, 'processing') RETURNING id`, runID, tenant, f.Name, f.SHA256, f.Size).Scan(&f.ID)
	if err != nil {
		return fmt.Errorf("ledger: add file %q: %w", f.Name, err)
	}
	return nil
}

// RecordFile implements Ledger.
func (l PGLedger) RecordFile(ctx context.Context, tx *sqlx.Tx, runID int64, f *File) error {
	code, msg := "", ""
	var rej *Rejection
	if errors.As(f.Err, &rej) {
		code, msg = rej.Code, rej.Message
	} else if f.Err != nil {
		msg = f.Err.Error()
	}
	var appliedAt any
	if f.Status == StatusApplied {
		appliedAt = time.Now()
	}
	c := f.Counts
	var key any
	if k := f.UploadKey(); k != "" {
		key = k
	}
	if _, err := tx.ExecContext(ctx, `UPDATE run_files SET upload_key = $18, sha256 = $2, size = $3, kind = $4, status = $5, rows = $6,
		created = $7, updated = $8, deactivated = $9, reactivated = $10, scheduled = $11, unchanged = $12,
		errors = $13, warnings = $14, error_code = $15, error = $16, applied_at = $17 WHERE id = $1`,
		f.ID, f.SHA256, f.Size, string(f.Kind), string(f.Status), c.Rows, c.Created, c.Updated, c.Deactivated,
		c.Reactivated, c.Scheduled, c.Unchanged, f.Issues.Errors, f.Issues.Warnings, code, msg, appliedAt, key); err != nil {
		return fmt.Errorf("ledger: record file %q: %w", f.Name, err)
	}
	return insertIssues(ctx, tx, runID, f.ID, f.Issues.List())
}

// AddIssues implements Ledger.
func (l PGLedger) AddIssues(ctx context.Context, tx *sqlx.Tx, runID int64, f *File, issues []Issue) error {
	c := f.Counts
	if _, err := tx.ExecContext(ctx, `UPDATE run_files SET errors = $2, warnings = $3, created = $4, updated = $5,
		deactivated = $6, reactivated = $7, scheduled = $8, unchanged = $9 WHERE id = $1`,
		f.ID, f.Issues.Errors, f.Issues.Warnings, c.Created, c.Updated, c.Deactivated, c.Reactivated, c.Scheduled, c.Unchanged); err != nil {
		return fmt.Errorf("ledger: update file %q: %w", f.Name, err)
	}
	return insertIssues(ctx, tx, runID, f.ID, issues)
}

// insertIssues writes issues into the ledger with one statement, in list
// order, whatever the driver of tx's connection (a bad file may carry
// thousands: one INSERT per issue took seconds).
func insertIssues(ctx context.Context, tx *sqlx.Tx, runID, fileID int64, list []Issue) error {
	if len(list) == 0 {
		return nil
	}
	rows := make(pq.Int64Array, len(list))
	cols, codes, sevs := make(pq.StringArray, len(list)), make(pq.StringArray, len(list)), make(pq.StringArray, len(list))
	msgs, vals := make(pq.StringArray, len(list)), make(pq.StringArray, len(list))
	for k, is := range list {
		rows[k] = int64(max(is.Row, 0)) // 0: the file, not a row (NULL)
		cols[k], codes[k], sevs[k], msgs[k], vals[k] = is.Column, is.Code, string(is.Severity), is.Message, is.Value
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO issues (run_id, file_id, row, "column", code, severity, message, value)
		SELECT $1, $2, NULLIF(i.row, 0), i.col, i.code, i.sev, i.msg, i.val
		FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS i(row, col, code, sev, msg, val, n)
		ORDER BY i.n`, runID, fileID, rows, cols, codes, sevs, msgs, vals); err != nil {
		return fmt.Errorf("ledger: record issues: %w", err)
	}
	return nil
}

// RecordStage implements Ledger.
func (l PGLedger) RecordStage(ctx context.Context, runID, fileID int64, res StageResult) error {
	var fid any
	if fileID > 0 {
		fid = fileID
	}
	_, err := l.DB.ExecContext(ctx, `INSERT INTO run_stages (run_id, file_id, stage, status, rows_in, rows_out, duration_ms, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, runID, fid, res.Stage, res.Status, res.RowsIn, res.RowsOut, res.DurationMS, res.Error)
	if err != nil {
		return fmt.Errorf("ledger: record stage %s: %w", res.Stage, err)
	}
	return nil
}

// FinishRun implements Ledger.
func (l PGLedger) FinishRun(ctx context.Context, runID int64, status string, class Class, reason string) error {
	var cls any
	if class != "" {
		cls = string(class)
	}
	_, err := l.DB.ExecContext(ctx, `UPDATE runs SET status = $2, failure_class = $3, failure_reason = $4, finished_at = now()
		WHERE id = $1`, runID, status, cls, reason)
	if err != nil {
		return fmt.Errorf("ledger: finish run %d: %w", runID, err)
	}
	return nil
}

// AppliedUpload implements Ledger.
func (l PGLedger) AppliedUpload(ctx context.Context, tenant, key string) (int64, error) {
	var run int64
	err := l.DB.GetContext(ctx, &run, `SELECT run_id FROM run_files WHERE tenant_id = $1 AND upload_key = $2 AND status = 'applied'`, tenant, key)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: look up upload: %w", err)
	}
	return run, nil
}

// LastApplied implements Ledger.
func (l PGLedger) LastApplied(ctx context.Context, tenant string) (map[string]AppliedFile, error) {
	rows, err := l.DB.QueryxContext(ctx, `SELECT DISTINCT ON (kind) kind, sha256, errors = 0
		FROM run_files WHERE tenant_id = $1 AND status = 'applied'
		ORDER BY kind, applied_at DESC, id DESC`, tenant)
	if err != nil {
		return nil, fmt.Errorf("ledger: last applied files: %w", err)
	}
	defer rows.Close()
	out := map[string]AppliedFile{}
	for rows.Next() {
		var kind string
		var a AppliedFile
		if err := rows.Scan(&kind, &a.SHA256, &a.Clean); err != nil {
			return nil, err
		}
		out[kind] = a
	}
	return out, rows.Err()
}

// DryLedger wraps a ledger for a dry run: reads pass through, writes are
// dropped, so a dry run leaves no trace.
type DryLedger struct{ Ledger }

// StartRun implements Ledger.
func (DryLedger) StartRun(context.Context, *Run) (int64, error) { return 0, nil }

// AddFile implements Ledger.
func (DryLedger) AddFile(context.Context, int64, string, *File) error { return nil }

// RecordFile implements Ledger.
func (DryLedger) RecordFile(context.Context, *sqlx.Tx, int64, *File) error { return nil }

// AddIssues implements Ledger.
func (DryLedger) AddIssues(context.Context, *sqlx.Tx, int64, *File, []Issue) error { return nil }

// RecordStage implements Ledger.
func (DryLedger) RecordStage(context.Context, int64, int64, StageResult) error { return nil }

// FinishRun implements Ledger.
func (DryLedger) FinishRun(context.Context, int64, string, Class, string) error { return nil }
