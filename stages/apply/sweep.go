package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline"
)

// SweepOptions tune one sweep.
type SweepOptions struct {
	// Date is the sweep's "today": users whose deactivation_date is on or
	// before it are deactivated. Zero means today in the tenant's time zone.
	Date time.Time
	// Trigger is recorded on the sweep's run: pipeline.TriggerScheduled
	// (the default, for the daily job) or pipeline.TriggerManual (the CLI).
	Trigger string
	// DryRun counts the users that would be deactivated and changes
	// nothing, not even the ledger.
	DryRun bool
	// Now is the clock for a zero Date; nil means time.Now.
	Now func() time.Time
}

// SweptUser is one user a sweep deactivated (or would, in a dry run).
type SweptUser struct {
	UserID           int64     `db:"id" json:"user_id"`
	EmployeeID       string    `db:"employee_id" json:"employee_id"`
	Email            string    `db:"email" json:"email"`
	DeactivationDate time.Time `db:"deactivation_date" json:"deactivation_date"`
}

// SweepResult is what a sweep did.
type SweepResult struct {
	RunID  int64       `json:"run_id"` // 0 in a dry run
	Tenant string      `json:"tenant"`
	Date   time.Time   `json:"date"`
	DryRun bool        `json:"dry_run"`
	Users  []SweptUser `json:"users"` // ordered by deactivation date, then e-mail
}

// Sweep carries out the tenant's scheduled deactivations (FILE_RULES.md
// "Future deactivation dates are carried out by the daily sweep"): every
// active user whose deactivation_date is on or before the date becomes
// inactive, with one user_history row each (action "deactivate", effective
// on the user's deactivation date, file_id NULL).
//
// A sweep is a run of its own in the ledger (runs row with the date as its
// logical date, and one run_stages row "sweep"), so that history rows have a
// run and `roster runs` shows it. It holds the tenant's run lock, so it never
// interleaves with a file run, and it applies everything in one
// transaction. Sweeping a date twice changes nothing the second time.
// Seats and the mass-deactivation guard do not apply: these deactivations
// were accepted when their file was.
func Sweep(ctx context.Context, db *sqlx.DB, tenant *pipeline.Tenant, opt SweepOptions) (*SweepResult, error) {
	date := opt.Date
	if date.IsZero() {
		now := time.Now
		if opt.Now != nil {
			now = opt.Now
		}
		date = tenant.Today(now())
	}
	y, m, d := date.Date()
	date = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	res := &SweepResult{Tenant: tenant.ID, Date: date, DryRun: opt.DryRun, Users: []SweptUser{}}
	const due = `SELECT id, COALESCE(employee_id, '') AS employee_id, email, deactivation_date FROM users
		WHERE tenant_id = $1 AND active AND deactivation_date <= $2`
	if opt.DryRun {
		if err := db.SelectContext(ctx, &res.Users, due+` ORDER BY deactivation_date, email, id`, tenant.ID, date); err != nil {
			return nil, fmt.Errorf("sweep %s: %w", tenant.ID, err)
		}
		return res, nil
	}

	unlock, err := pipeline.LockTenant(ctx, db, tenant.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := pipeline.FailStaleRuns(ctx, db, tenant.ID); err != nil {
		return nil, err
	}
	trigger := opt.Trigger
	if trigger == "" {
		trigger = pipeline.TriggerScheduled
	}
	ledger := pipeline.PGLedger{DB: db}
	runID, err := ledger.StartRun(ctx, &pipeline.Run{Tenant: tenant, Trigger: trigger, LogicalDate: date})
	if err != nil {
		return nil, err
	}
	res.RunID = runID
	started := time.Now()
	err = sweep(ctx, db, tenant.ID, runID, date, due, res)
	sr := pipeline.StageResult{Stage: "sweep", RowsIn: int64(len(res.Users)), RowsOut: int64(len(res.Users)),
		DurationMS: float64(time.Since(started).Microseconds()) / 1000, Status: "ok"}
	status, class, reason := pipeline.RunSucceeded, pipeline.Class(""), ""
	if err != nil {
		sr.Status, sr.Error, sr.RowsOut = "failed", err.Error(), 0
		status, class, reason = pipeline.RunFailed, pipeline.ClassSystem, err.Error()
		res.Users = []SweptUser{}
	}
	// Record the end even if the caller's context was cancelled: a run
	// must never stay "running".
	lctx := context.WithoutCancel(ctx)
	lerr := errors.Join(ledger.RecordStage(lctx, runID, 0, sr), ledger.FinishRun(lctx, runID, status, class, reason))
	if err != nil {
		return res, errors.Join(err, lerr)
	}
	return res, lerr
}

// sweep deactivates the due users in one transaction.
func sweep(ctx context.Context, db *sqlx.DB, tenant string, runID int64, date time.Time, due string, res *SweepResult) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sweep %s: begin: %w", tenant, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if err := tx.SelectContext(ctx, &res.Users, due+` ORDER BY deactivation_date, email, id FOR UPDATE`, tenant, date); err != nil {
		return fmt.Errorf("sweep %s: read due users: %w", tenant, err)
	}
	if len(res.Users) == 0 {
		return tx.Commit()
	}
	ids := make([]int64, len(res.Users))
	for i, u := range res.Users {
		ids[i] = u.UserID
	}
	// History first, from the state before the change, like apply.
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_history (tenant_id, run_id, file_id, user_id, action, effective_date, changes)
		SELECT $1, $2, NULL, u.id, 'deactivate', u.deactivation_date,
			jsonb_build_object('active', jsonb_build_object('old', true, 'new', false))
		FROM users u WHERE u.tenant_id = $1 AND u.id = ANY($3)`, tenant, runID, pq.Int64Array(ids)); err != nil {
		return fmt.Errorf("sweep %s: history: %w", tenant, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET active = false, last_run_id = $2, updated_at = now()
		WHERE tenant_id = $1 AND id = ANY($3)`, tenant, runID, pq.Int64Array(ids)); err != nil {
		return fmt.Errorf("sweep %s: deactivate: %w", tenant, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sweep %s: commit: %w", tenant, err)
	}
	return nil
}
