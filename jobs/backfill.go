package jobs

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/fetch"
)

// Reprocess policies of a backfill, as data engineers know them from
// Airflow.
const (
	ReprocessMissing = "missing" // dates without a finished run
	ReprocessFailed  = "failed"  // those, and dates whose last run failed
	ReprocessAll     = "all"     // every date with files
)

// Backfill replays, date by date in order, the files staging kept for a
// tenant's logical dates, each as a run with trigger "backfill". It reads
// only staging and the ledger, never the SFTP store.
type Backfill struct {
	Runner        *pipeline.Runner
	Tenant        string
	From, To      time.Time
	Reprocess     string
	KeyPassphrase []byte
	// Progress, when set, is called after each date.
	Progress func(Progress)
	// ExportOnly, when set, replaces each date's run: the date's analytics
	// partitions are rewritten from the ledger and history as they are,
	// every date of the range, files or not (--export-only).
	ExportOnly func(ctx context.Context, date time.Time) error
}

// Decision is what a backfill does with one date, and what came of it.
type Decision struct {
	Date     string   `json:"date"`
	Decision string   `json:"decision"` // run or skip
	Reason   string   `json:"reason"`
	Files    []string `json:"files"`
	RunID    int64    `json:"run_id,omitempty"`
	Status   string   `json:"status,omitempty"`
	Rows     int      `json:"rows,omitempty"`
}

// Progress is the state of a running backfill.
type Progress struct {
	Done, Total int
	Rows        int
	Elapsed     time.Duration
	Date        string
}

// ETA estimates the time left from the dates done so far.
func (p Progress) ETA() time.Duration {
	if p.Done == 0 {
		return 0
	}
	return time.Duration(float64(p.Elapsed) / float64(p.Done) * float64(p.Total-p.Done))
}

// received is one file staging kept: its bytes and where it came from.
type received struct {
	fetch.Meta
	path string
}

// staged indexes the tenant's staging by logical date.
func (b *Backfill) staged() (map[string][]received, error) {
	dir := filepath.Join(b.Runner.StagingDir, b.Tenant)
	metas, err := filepath.Glob(filepath.Join(dir, "*.meta.jsonl"))
	if err != nil {
		return nil, err
	}
	byDate := map[string][]received{}
	seen := map[string]bool{}
	for _, m := range metas {
		f, err := os.Open(m)
		if err != nil {
			return nil, fmt.Errorf("backfill: read staging: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var meta fetch.Meta
			if json.Unmarshal(sc.Bytes(), &meta) != nil || meta.Tenant != b.Tenant {
				continue
			}
			// A replayed file is staged again on the same date: once is enough.
			k := meta.LogicalDate + "|" + meta.Name + "|" + meta.SHA256
			if seen[k] {
				continue
			}
			seen[k] = true
			byDate[meta.LogicalDate] = append(byDate[meta.LogicalDate], received{Meta: meta, path: strings.TrimSuffix(m, ".meta.jsonl")})
		}
		f.Close()
	}
	for _, rs := range byDate {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].ReceivedAt.Before(rs[j].ReceivedAt) })
	}
	return byDate, nil
}

// Plan decides each date of the range: run, or skip and why.
func (b *Backfill) Plan(ctx context.Context) ([]Decision, map[string][]received, error) {
	switch b.Reprocess {
	case "":
		b.Reprocess = ReprocessMissing
	case ReprocessMissing, ReprocessFailed, ReprocessAll:
	default:
		return nil, nil, fmt.Errorf("backfill: --reprocess must be missing, failed or all, not %q", b.Reprocess)
	}
	if b.To.Before(b.From) {
		return nil, nil, errors.New("backfill: --to is before --from")
	}
	if _, err := (pipeline.Tenants{DB: b.Runner.DB}).Get(ctx, b.Tenant); err != nil {
		return nil, nil, err
	}
	files, err := b.staged()
	if err != nil {
		return nil, nil, err
	}
	var out []Decision
	for d := b.From; !d.After(b.To); d = d.AddDate(0, 0, 1) {
		date := d.Format(time.DateOnly)
		dec := Decision{Date: date, Files: []string{}}
		for _, r := range files[date] {
			dec.Files = append(dec.Files, r.Name)
		}
		var last struct {
			ID     int64  `db:"id"`
			Status string `db:"status"`
		}
		err := b.Runner.DB.GetContext(ctx, &last, `SELECT id, status FROM runs WHERE tenant_id = $1 AND logical_date = $2 AND NOT dry_run
			AND EXISTS (SELECT 1 FROM run_files f WHERE f.run_id = runs.id) ORDER BY id DESC LIMIT 1`, b.Tenant, d)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("backfill: read the ledger: %w", err)
		}
		switch {
		case b.ExportOnly != nil:
			dec.Decision, dec.Reason = "run", "--export-only: rewrite the date's analytics partitions"
		case len(dec.Files) == 0:
			dec.Decision, dec.Reason = "skip", "no files were received for this date"
		case last.Status == pipeline.RunRunning:
			dec.Decision, dec.Reason = "skip", fmt.Sprintf("run %d of this date is still running", last.ID)
		case b.Reprocess == ReprocessAll:
			dec.Decision, dec.Reason = "run", "--reprocess all"
		case last.ID == 0:
			dec.Decision, dec.Reason = "run", "no run yet for this date"
		case last.Status == pipeline.RunFailed && b.Reprocess == ReprocessFailed:
			dec.Decision, dec.Reason = "run", fmt.Sprintf("the last run (%d) failed", last.ID)
		case last.Status == pipeline.RunFailed:
			dec.Decision, dec.Reason = "skip", fmt.Sprintf("the last run (%d) failed; --reprocess failed runs it again", last.ID)
		default:
			dec.Decision, dec.Reason = "skip", fmt.Sprintf("already done by run %d (%s)", last.ID, last.Status)
		}
		out = append(out, dec)
	}
	return out, files, nil
}

// Run carries out the plan, date by date in order. Running it again skips
// what is done, so an interrupted backfill resumes where it stopped.
func (b *Backfill) Run(ctx context.Context) ([]Decision, error) {
	plan, files, err := b.Plan(ctx)
	if err != nil {
		return nil, err
	}
	total := 0
	for _, d := range plan {
		if d.Decision == "run" {
			total++
		}
	}
	started := time.Now()
	prog := Progress{Total: total}
	for i := range plan {
		d := &plan[i]
		if d.Decision != "run" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return plan, err
		}
		date, _ := time.Parse(time.DateOnly, d.Date)
		if b.ExportOnly != nil {
			if err := b.ExportOnly(ctx, date); err != nil {
				d.Status = pipeline.RunFailed
				return plan, fmt.Errorf("backfill %s: export: %w", d.Date, err)
			}
			d.Status = pipeline.RunSucceeded
			prog.Done++
			prog.Elapsed = time.Since(started)
			prog.Date = d.Date
			if b.Progress != nil {
				b.Progress(prog)
			}
			continue
		}
		var inputs []*pipeline.File
		for _, r := range files[d.Date] {
			inputs = append(inputs, &pipeline.File{Name: r.Name, Source: r.path, ModTime: r.ReceivedAt})
		}
		res, err := b.Runner.Run(ctx, pipeline.Request{Tenant: b.Tenant, Trigger: pipeline.TriggerBackfill, LogicalDate: date,
			Files: inputs, KeyPassphrase: b.KeyPassphrase})
		if err != nil {
			return plan, fmt.Errorf("backfill %s: %w", d.Date, err)
		}
		d.RunID, d.Status = res.RunID, res.Status
		for _, f := range res.Files {
			d.Rows += f.Counts.Rows
		}
		prog.Done++
		prog.Rows += d.Rows
		prog.Elapsed = time.Since(started)
		prog.Date = d.Date
		if b.Progress != nil {
			b.Progress(prog)
		}
	}
	return plan, nil
}
