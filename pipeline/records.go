package pipeline

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// FileRecord is a run_files row as the operator's views read it (roster
// runs show, the status page).
type FileRecord struct {
	ID     int64  `db:"id" json:"file_id"`
	Name   string `db:"name" json:"name"`
	SHA256 string `db:"sha256" json:"sha256"`
	Size   int64  `db:"size" json:"size"`
	Kind   string `db:"kind" json:"kind"`
	Status string `db:"status" json:"status"`
	Counts
	Errors    int    `db:"errors" json:"errors"`
	Warnings  int    `db:"warnings" json:"warnings"`
	ErrorCode string `db:"error_code" json:"error_code"`
	Error     string `db:"error" json:"error"`
}

// StageRecord is a run_stages row; File is empty for a stage of the whole
// run (the export).
type StageRecord struct {
	File       string  `db:"file" json:"file"`
	Stage      string  `db:"stage" json:"stage"`
	Status     string  `db:"status" json:"status"`
	RowsIn     int64   `db:"rows_in" json:"rows_in"`
	RowsOut    int64   `db:"rows_out" json:"rows_out"`
	DurationMS float64 `db:"duration_ms" json:"duration_ms"`
	Error      string  `db:"error" json:"error,omitempty"`
}

// IssueRecord is an issues row; Row is nil for an issue of the whole file.
type IssueRecord struct {
	File     string `db:"file" json:"file"`
	Row      *int64 `db:"row" json:"row"`
	Column   string `db:"column" json:"column"`
	Code     string `db:"code" json:"code"`
	Severity string `db:"severity" json:"severity"`
	Message  string `db:"message" json:"message"`
	Value    string `db:"value" json:"value"`
}

// RunRecords is what the ledger holds about one run's files.
type RunRecords struct {
	Files  []FileRecord
	Stages []StageRecord
	Issues []IssueRecord
}

// ReadRunRecords reads a run's files, stages and issues (the first
// issueLimit of them, in file and row order; 0: all), through q, a
// database or a read-only transaction.
func ReadRunRecords(ctx context.Context, q sqlx.QueryerContext, runID int64, issueLimit int) (*RunRecords, error) {
	r := &RunRecords{Files: []FileRecord{}, Stages: []StageRecord{}, Issues: []IssueRecord{}}
	if err := sqlx.SelectContext(ctx, q, &r.Files, `SELECT id, name, sha256, size, kind, status, rows, created, updated,
			deactivated, reactivated, scheduled, unchanged, errors, warnings, error_code, error
		FROM run_files WHERE run_id = $1 ORDER BY id`, runID); err != nil {
		return nil, fmt.Errorf("read the files of run %d: %w", runID, err)
	}
	if err := sqlx.SelectContext(ctx, q, &r.Stages, `SELECT coalesce(f.name, '') AS file, s.stage, s.status, s.rows_in,
			s.rows_out, s.duration_ms, s.error
		FROM run_stages s LEFT JOIN run_files f ON f.id = s.file_id WHERE s.run_id = $1 ORDER BY s.id`, runID); err != nil {
		return nil, fmt.Errorf("read the stages of run %d: %w", runID, err)
	}
	limit := any(nil) // LIMIT NULL: all
	if issueLimit > 0 {
		limit = issueLimit
	}
	if err := sqlx.SelectContext(ctx, q, &r.Issues, `SELECT coalesce(f.name, '') AS file, i.row, i."column", i.code,
			i.severity, i.message, i.value
		FROM issues i LEFT JOIN run_files f ON f.id = i.file_id WHERE i.run_id = $1
		ORDER BY i.file_id NULLS FIRST, i.row NULLS FIRST, i.id LIMIT $2`, runID, limit); err != nil {
		return nil, fmt.Errorf("read the issues of run %d: %w", runID, err)
	}
	return r, nil
}
