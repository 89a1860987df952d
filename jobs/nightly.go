package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/apply"
)

// Nightly carries out each tenant's daily work at its configured time in
// its time zone: the deactivation sweep, then whatever After adds (the
// analytics export). It is driven by RunDue, which the scheduler calls every
// minute: a job is due once the tenant's local time has passed NightlyAt,
// and is claimed in job_runs so replicas run it once per date and a replica
// starting after downtime runs what it missed.
type Nightly struct {
	DB  *sqlx.DB
	Log *slog.Logger
	Now func() time.Time
	// After runs after a successful sweep, for the same tenant and date.
	After func(ctx context.Context, t *pipeline.Tenant, date time.Time) error
}

const nightlyJob = "nightly"

// Due reports the logical date whose nightly work is due for t at now:
// today in the tenant's zone once its NightlyAt passed, else yesterday.
func Due(t *pipeline.Tenant, now time.Time) time.Time {
	local := now.In(t.Location())
	var h, m int
	if _, err := fmt.Sscanf(t.NightlyAt, "%d:%d", &h, &m); err != nil {
		h, m = 2, 0
	}
	today := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, time.UTC)
	at := time.Date(local.Year(), local.Month(), local.Day(), h, m, 0, 0, t.Location())
	if local.Before(at) {
		return today.AddDate(0, 0, -1)
	}
	return today
}

// RunDue runs every tenant's due nightly work not yet claimed.
func (n *Nightly) RunDue(ctx context.Context) error {
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	log := n.Log
	if log == nil {
		log = slog.Default()
	}
	tenants, err := pipeline.Tenants{DB: n.DB}.List(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		date := Due(t, now())
		claimed, err := n.claim(ctx, t.ID, date)
		if err != nil {
			return err
		}
		if !claimed {
			continue
		}
		err = n.runOne(ctx, t, date)
		status, msg := "succeeded", ""
		if err != nil {
			status, msg = "failed", err.Error()
			log.Error("nightly job failed", "tenant", t.ID, "date", date.Format(time.DateOnly), "err", err)
		}
		if _, uerr := n.DB.ExecContext(context.WithoutCancel(ctx), `UPDATE job_runs SET status = $4, error = $5, finished_at = now()
			WHERE job = $1 AND tenant_id = $2 AND logical_date = $3`, nightlyJob, t.ID, date, status, msg); uerr != nil {
			return uerr
		}
	}
	return nil
}

// claim takes (nightly, tenant, date) unless another replica did. A failed
// claim is retried; one left running for an hour (its process died) is
// taken over.
func (n *Nightly) claim(ctx context.Context, tenant string, date time.Time) (bool, error) {
	res, err := n.DB.ExecContext(ctx, `INSERT INTO job_runs (job, tenant_id, logical_date) VALUES ($1, $2, $3)
		ON CONFLICT (job, tenant_id, logical_date) DO UPDATE SET status = 'running', error = '', started_at = now(), finished_at = NULL
		WHERE job_runs.status = 'failed' OR (job_runs.status = 'running' AND job_runs.started_at < now() - interval '1 hour')`, nightlyJob, tenant, date)
	if err != nil {
		return false, fmt.Errorf("nightly: claim %s %s: %w", tenant, date.Format(time.DateOnly), err)
	}
	k, _ := res.RowsAffected()
	return k == 1, nil
}

func (n *Nightly) runOne(ctx context.Context, t *pipeline.Tenant, date time.Time) error {
	// The sweep waits for a file run of the tenant to finish: it takes the
	// same lock. A few tries cover a busy tenant.
	var err error
	for try := 0; try < 10; try++ {
		_, err = apply.Sweep(ctx, n.DB, t, apply.SweepOptions{Date: date, Trigger: pipeline.TriggerScheduled})
		if !errors.Is(err, pipeline.ErrTenantBusy) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if n.After != nil {
		return n.After(ctx, t, date)
	}
	return nil
}
