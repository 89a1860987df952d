package status

import (
	"context"
	"database/sql"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
)

// DurationBuckets are the upper bounds, in seconds, of
// roster_stage_duration_seconds.
var DurationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Run and file statuses as the ledger has them. The finished ones are
// counters (they only grow); the transient ones ("running", "processing")
// are gauges of their own, since a counter must never go down.
var (
	runStatuses  = []string{"succeeded", "partial", "failed"}
	fileStatuses = []string{"applied", "rejected", "duplicate", "planned", "failed"}
	rowActions   = []string{"created", "updated", "deactivated", "reactivated", "scheduled", "unchanged"}
)

var (
	descRuns = prometheus.NewDesc("roster_runs_total",
		"Runs recorded in the ledger that finished, by final status (succeeded, partial, failed).", []string{"tenant", "status"}, nil)
	descRunning = prometheus.NewDesc("roster_runs_running",
		"Runs recorded in the ledger as running now.", []string{"tenant"}, nil)
	descRows = prometheus.NewDesc("roster_rows_total",
		"Rows of applied files, by the action taken (the run_files counts).", []string{"tenant", "action"}, nil)
	descFiles = prometheus.NewDesc("roster_files_total",
		"Files recorded in the ledger with an outcome, by status.", []string{"tenant", "status"}, nil)
	descProcessing = prometheus.NewDesc("roster_files_processing",
		"Files recorded in the ledger as being processed now.", []string{"tenant"}, nil)
	descLastSuccess = prometheus.NewDesc("roster_last_success_timestamp_seconds",
		"When the tenant's last successful run (succeeded or partial) finished, in Unix seconds; 0 when it never had one.", []string{"tenant"}, nil)
	descSinceSuccess = prometheus.NewDesc("roster_seconds_since_last_success",
		"Seconds since the tenant's last successful run (succeeded or partial) finished, by the database's clock; -1 when it never had one.", []string{"tenant"}, nil)
	descStage = prometheus.NewDesc("roster_stage_duration_seconds",
		"How long stages took, from every run_stages row of the ledger.", []string{"stage"}, nil)
	descWaiting = prometheus.NewDesc("roster_files_waiting",
		"Uploads waiting in the tenant's /incoming.", []string{"tenant"}, nil)
	descUp = prometheus.NewDesc("roster_ledger_up",
		"1 when this scrape read the ledger, 0 when it failed (the ledger's series are then missing).", nil, nil)
)

// ledgerCollector reads the ledger at each scrape, in one read-only
// snapshot, with one set-based query per metric family.
type ledgerCollector struct {
	db  *sqlx.DB
	cfg *config
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRuns, descRunning, descRows, descFiles, descProcessing,
		descLastSuccess, descSinceSuccess, descStage, descWaiting, descUp} {
		ch <- d
	}
}

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.timeout)
	defer cancel()
	ms, tenants, err := c.read(ctx)
	if err != nil {
		c.cfg.log.Error("metrics: read the ledger", "err", err)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	for _, m := range ms {
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	if c.cfg.waiting != nil {
		waiting, err := c.cfg.waiting(ctx)
		if err != nil {
			c.cfg.log.Error("metrics: files waiting", "err", err)
			return
		}
		seen := map[string]bool{}
		for _, t := range tenants {
			seen[t] = true
			ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(waiting[t]), t)
		}
		for t, n := range waiting {
			if !seen[t] {
				ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(n), t)
			}
		}
	}
}

// read runs the ledger queries in one read-only snapshot, so the families of
// a scrape agree with each other. It returns the metrics and every tenant.
func (c *ledgerCollector) read(ctx context.Context) ([]prometheus.Metric, []string, error) {
	tx, err := c.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback() //nolint:errcheck // read only
	var out []prometheus.Metric
	add := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, t, v, labels...))
	}

	// Runs by status, every tenant × every status, zeros included.
	rows, err := tx.QueryContext(ctx, `SELECT t.id, s.status, count(r.id)
		FROM tenants t CROSS JOIN unnest($1::text[]) AS s(status)
		LEFT JOIN runs r ON r.tenant_id = t.id AND r.status = s.status
		GROUP BY t.id, s.status ORDER BY t.id, s.status`, pq.StringArray(append([]string{"running"}, runStatuses...)))
	if err != nil {
		return nil, nil, fmt.Errorf("runs: %w", err)
	}
	err = scanRows(rows, func(r *sql.Rows) error {
		var tenant, status string
		var n float64
		if err := r.Scan(&tenant, &status, &n); err != nil {
			return err
		}
		if status == "running" {
			add(descRunning, prometheus.GaugeValue, n, tenant)
		} else {
			add(descRuns, prometheus.CounterValue, n, tenant, status)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("runs: %w", err)
	}

	// Files by status, the same way.
	rows, err = tx.QueryContext(ctx, `SELECT t.id, s.status, count(f.id)
		FROM tenants t CROSS JOIN unnest($1::text[]) AS s(status)
		LEFT JOIN run_files f ON f.tenant_id = t.id AND f.status = s.status
		GROUP BY t.id, s.status ORDER BY t.id, s.status`, pq.StringArray(append([]string{"processing"}, fileStatuses...)))
	if err != nil {
		return nil, nil, fmt.Errorf("files: %w", err)
	}
	err = scanRows(rows, func(r *sql.Rows) error {
		var tenant, status string
		var n float64
		if err := r.Scan(&tenant, &status, &n); err != nil {
			return err
		}
		if status == "processing" {
			add(descProcessing, prometheus.GaugeValue, n, tenant)
		} else {
			add(descFiles, prometheus.CounterValue, n, tenant, status)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("files: %w", err)
	}

	// Rows of applied files by action.
	rows, err = tx.QueryContext(ctx, `SELECT t.id, coalesce(sum(f.created), 0), coalesce(sum(f.updated), 0),
			coalesce(sum(f.deactivated), 0), coalesce(sum(f.reactivated), 0), coalesce(sum(f.scheduled), 0),
			coalesce(sum(f.unchanged), 0)
		FROM tenants t LEFT JOIN run_files f ON f.tenant_id = t.id AND f.status = 'applied'
		GROUP BY t.id ORDER BY t.id`)
	if err != nil {
		return nil, nil, fmt.Errorf("rows: %w", err)
	}
	err = scanRows(rows, func(r *sql.Rows) error {
		var tenant string
		v := make([]float64, len(rowActions))
		if err := r.Scan(&tenant, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]); err != nil {
			return err
		}
		for i, a := range rowActions {
			add(descRows, prometheus.CounterValue, v[i], tenant, a)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rows: %w", err)
	}

	// Last success, and the age of it by the database's clock. This query
	// also lists every tenant, for roster_files_waiting.
	var tenants []string
	rows, err = tx.QueryContext(ctx, `SELECT t.id, extract(epoch FROM max(r.finished_at))::float8,
			extract(epoch FROM clock_timestamp() - max(r.finished_at))::float8
		FROM tenants t LEFT JOIN runs r ON r.tenant_id = t.id AND r.status IN ('succeeded', 'partial') AND NOT r.dry_run
		GROUP BY t.id ORDER BY t.id`)
	if err != nil {
		return nil, nil, fmt.Errorf("last success: %w", err)
	}
	err = scanRows(rows, func(r *sql.Rows) error {
		var tenant string
		var at, since sql.NullFloat64
		if err := r.Scan(&tenant, &at, &since); err != nil {
			return err
		}
		tenants = append(tenants, tenant)
		if !at.Valid {
			at.Float64, since.Float64 = 0, -1
		}
		add(descLastSuccess, prometheus.GaugeValue, at.Float64, tenant)
		add(descSinceSuccess, prometheus.GaugeValue, max(since.Float64, -1), tenant)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("last success: %w", err)
	}

	hs, err := stageHistograms(ctx, tx)
	if err != nil {
		return nil, nil, fmt.Errorf("stage durations: %w", err)
	}
	out = append(out, hs...)
	return out, tenants, nil
}

// stageHistograms builds roster_stage_duration_seconds from run_stages in
// one query, leaving out stages skipped by their configuration (an export
// left to the nightly job would otherwise count as a 0 s export per run). Prometheus buckets count d <= bound, while width_bucket counts
// lower bounds <= operand; so the query asks width_bucket(-d, -bounds
// reversed), which is the number of bounds >= d: a row with w such bounds
// falls in the cumulative buckets from index len(bounds)-w up.
func stageHistograms(ctx context.Context, tx *sqlx.Tx) ([]prometheus.Metric, error) {
	n := len(DurationBuckets)
	neg := make([]float64, n)
	for i, b := range DurationBuckets {
		neg[n-1-i] = -b
	}
	rows, err := tx.QueryContext(ctx, `SELECT stage, width_bucket(-duration_ms / 1000.0, $1::float8[]), count(*), sum(duration_ms) / 1000.0
		FROM run_stages WHERE status <> 'skipped' GROUP BY 1, 2`, pq.Float64Array(neg))
	if err != nil {
		return nil, err
	}
	type hist struct {
		count uint64
		sum   float64
		per   []uint64 // per[i]: rows whose smallest bucket is i (i == n: above every bound)
	}
	hs := map[string]*hist{}
	err = scanRows(rows, func(r *sql.Rows) error {
		var stage string
		var w int
		var count uint64
		var sum float64
		if err := r.Scan(&stage, &w, &count, &sum); err != nil {
			return err
		}
		h := hs[stage]
		if h == nil {
			h = &hist{per: make([]uint64, n+1)}
			hs[stage] = h
		}
		h.count += count
		h.sum += sum
		h.per[n-w] += count
		return nil
	})
	if err != nil {
		return nil, err
	}
	stages := make([]string, 0, len(hs))
	for s := range hs {
		stages = append(stages, s)
	}
	sort.Strings(stages)
	var out []prometheus.Metric
	for _, s := range stages {
		h := hs[s]
		buckets := make(map[float64]uint64, n)
		var cum uint64
		for i, b := range DurationBuckets {
			cum += h.per[i]
			buckets[b] = cum
		}
		out = append(out, prometheus.MustNewConstHistogram(descStage, h.count, h.sum, buckets, s))
	}
	return out, nil
}

func scanRows(rows *sql.Rows, fn func(*sql.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
