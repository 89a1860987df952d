// Package status serves roster's operations endpoints over HTTP:
//
//   - /healthz: 200 when the database answers and every extra check passes,
//     503 naming the failing check otherwise; a JSON body either way.
//   - /metrics: Prometheus metrics read from the ledger at scrape time, so
//     every tenant has its series from start-up and runs made by any process
//     or replica count; plus the Go runtime and process collectors.
//   - /: a read-only HTML status page (tenants, the last 50 runs) and
//     /runs/{id} (a run's files, stages and first issues).
//
// Everything here only reads: nothing on these pages changes the ledger.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultTimeout bounds each health check, each scrape's ledger queries and
// each page's queries.
const DefaultTimeout = 5 * time.Second

// Option configures Handler.
type Option func(*config)

type config struct {
	checks  []check
	waiting func(context.Context) (map[string]int, error)
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
}

type check struct {
	name string
	fn   func(context.Context) error
}

// WithCheck adds a health check run by /healthz beside the database's (for
// example the SFTP store): /healthz answers 503, naming it, when fn fails.
func WithCheck(name string, fn func(ctx context.Context) error) Option {
	return func(c *config) { c.checks = append(c.checks, check{name, fn}) }
}

// WithWaiting gives roster_files_waiting{tenant}: fn returns, per tenant, how
// many uploads wait in /incoming. Tenants of the tenants table missing from
// the map count 0; when fn fails the family is left out of that scrape and
// the error logged.
func WithWaiting(fn func(ctx context.Context) (map[string]int, error)) Option {
	return func(c *config) { c.waiting = fn }
}

// WithTimeout bounds each health check, scrape and page (default
// DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithLogger sets where failed scrapes and pages are logged (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// Handler serves /healthz, /metrics, / and /runs/{id} from db.
func Handler(db *sqlx.DB, opts ...Option) http.Handler {
	c := &config{timeout: DefaultTimeout, log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(c)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&ledgerCollector{db: db, cfg: c},
	)
	s := &server{db: db, cfg: c}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slogErrorLog{c.log},
		ErrorHandling: promhttp.ContinueOnError,
		// Each scrape queries the ledger: a pile of slow scrapes must not
		// pile up on the database.
		MaxRequestsInFlight: 4,
		Timeout:             2 * c.timeout,
	}))
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /runs/{id}", s.run)
	return mux
}

type server struct {
	db  *sqlx.DB
	cfg *config
}

// CheckResult is one check's outcome in /healthz's body.
type CheckResult struct {
	Status string `json:"status"` // "ok" or "fail"
	Error  string `json:"error,omitempty"`
}

// Health is /healthz's body.
type Health struct {
	Status string                 `json:"status"` // "ok" or "fail"
	Checks map[string]CheckResult `json:"checks"`
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.timeout)
	defer cancel()
	checks := append([]check{{"database", func(ctx context.Context) error {
		var one int
		return s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
	}}}, s.cfg.checks...)
	res := Health{Status: "ok", Checks: map[string]CheckResult{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			err := runCheck(ctx, c.fn)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Status = "fail"
				res.Checks[c.name] = CheckResult{Status: "fail", Error: err.Error()}
				return
			}
			res.Checks[c.name] = CheckResult{Status: "ok"}
		})
	}
	wg.Wait()
	code := http.StatusOK
	if res.Status != "ok" {
		code = http.StatusServiceUnavailable
		var failed []string
		for name, c := range res.Checks {
			if c.Status != "ok" {
				failed = append(failed, name)
			}
		}
		sort.Strings(failed)
		s.cfg.log.Warn("health check failed", "checks", failed)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(res) //nolint:errcheck // the client went away
}

// runCheck runs fn, turning a panic into an error and giving up when ctx
// ends even if fn does not return.
func runCheck(ctx context.Context, fn func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- panicError{p}
			}
		}()
		done <- fn(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("check panicked: %v", p.v) }

// slogErrorLog adapts slog to promhttp's error logger.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	l.log.Error("metrics", "err", v)
}
