package status

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
)

// RecentRuns is how many runs the index page lists; IssuesShown how many
// issues a run's page lists.
const (
	RecentRuns  = 50
	IssuesShown = 500
)

type tenantRow struct {
	ID          string         `db:"id"`
	RunID       sql.NullInt64  `db:"run_id"`
	Status      sql.NullString `db:"status"`
	Started     sql.NullTime   `db:"started_at"`
	Finished    sql.NullTime   `db:"finished_at"`
	LastSuccess sql.NullTime   `db:"last_success"`
}

type runRow struct {
	ID            int64        `db:"id"`
	Tenant        string       `db:"tenant_id"`
	Trigger       string       `db:"trigger"`
	LogicalDate   time.Time    `db:"logical_date"`
	Status        string       `db:"status"`
	DryRun        bool         `db:"dry_run"`
	FailureClass  string       `db:"failure_class"`
	FailureReason string       `db:"failure_reason"`
	Host          string       `db:"host"`
	PID           int          `db:"pid"`
	Started       time.Time    `db:"started_at"`
	Finished      sql.NullTime `db:"finished_at"`
	Files         int          `db:"files"`
	Duration      string       `db:"-"`
}

type indexPage struct {
	Now     time.Time
	Tenants []tenantRow
	Runs    []runRow
}

type runPage struct {
	Now         time.Time
	Run         runRow
	Files       []pipeline.FileRecord
	Stages      []pipeline.StageRecord
	Issues      []pipeline.IssueRecord
	IssuesTotal int
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.timeout)
	defer cancel()
	p := indexPage{Now: s.cfg.now()}
	err := s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.SelectContext(ctx, &p.Tenants, `SELECT t.id, r.id AS run_id, r.status, r.started_at, r.finished_at,
				(SELECT max(finished_at) FROM runs WHERE tenant_id = t.id AND status IN ('succeeded', 'partial') AND NOT dry_run) AS last_success
			FROM tenants t
			LEFT JOIN LATERAL (SELECT id, status, started_at, finished_at FROM runs
				WHERE tenant_id = t.id ORDER BY started_at DESC, id DESC LIMIT 1) r ON true
			ORDER BY t.id`); err != nil {
			return fmt.Errorf("tenants: %w", err)
		}
		if err := tx.SelectContext(ctx, &p.Runs, `SELECT `+runColumns+`
			FROM runs r ORDER BY r.id DESC LIMIT $1`, RecentRuns); err != nil {
			return fmt.Errorf("runs: %w", err)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range p.Runs {
		p.Runs[i].Duration = runDuration(p.Runs[i], p.Now)
	}
	s.render(w, r, http.StatusOK, indexTmpl, p)
}

const runColumns = `r.id, r.tenant_id, r.trigger, r.logical_date, r.status, r.dry_run, coalesce(r.failure_class, '') AS failure_class,
	r.failure_reason, r.host, r.pid, r.started_at, r.finished_at,
	(SELECT count(*) FROM run_files f WHERE f.run_id = r.id) AS files`

func (s *server) run(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.render(w, r, http.StatusNotFound, notFoundTmpl, r.PathValue("id"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.timeout)
	defer cancel()
	p := runPage{Now: s.cfg.now()}
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &p.Run, `SELECT `+runColumns+` FROM runs r WHERE r.id = $1`, id); err != nil {
			return err
		}
		rec, err := pipeline.ReadRunRecords(ctx, tx, id, IssuesShown)
		if err != nil {
			return err
		}
		p.Files, p.Stages, p.Issues = rec.Files, rec.Stages, rec.Issues
		if err := tx.GetContext(ctx, &p.IssuesTotal, `SELECT count(*) FROM issues WHERE run_id = $1`, id); err != nil {
			return fmt.Errorf("issues: %w", err)
		}
		return nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		s.render(w, r, http.StatusNotFound, notFoundTmpl, r.PathValue("id"))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Run.Duration = runDuration(p.Run, p.Now)
	s.render(w, r, http.StatusOK, runTmpl, p)
}

// read runs fn in a read-only snapshot, so a page's tables agree.
func (s *server) read(ctx context.Context, fn func(*sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // read only
	return fn(tx)
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.cfg.log.Error("status page", "path", r.URL.Path, "err", err)
	s.render(w, r, http.StatusServiceUnavailable, errorTmpl, "the ledger could not be read; see the server's log")
}

// render executes t into a buffer first, so a template error is a clean
// 500 and never half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, code int, t *template.Template, data any) {
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "page", data); err != nil {
		s.cfg.log.Error("status page: render", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.WriteHeader(code)
	w.Write(buf.Bytes()) //nolint:errcheck // the client went away
}

func runDuration(r runRow, now time.Time) string {
	if r.Finished.Valid {
		return fmtDuration(r.Finished.Time.Sub(r.Started))
	}
	if r.Status == "running" {
		return "running for " + fmtDuration(now.Sub(r.Started))
	}
	return "—"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "—"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"nts": func(t sql.NullTime) string {
		if !t.Valid {
			return "—"
		}
		return t.Time.UTC().Format("2006-01-02 15:04:05Z")
	},
	"date": func(t time.Time) string { return t.Format("2006-01-02") },
	"ms": func(ms float64) string {
		switch {
		case ms < 10:
			return fmt.Sprintf("%.2f ms", ms)
		case ms < 1000:
			return fmt.Sprintf("%.0f ms", ms)
		}
		return fmtDuration(time.Duration(ms * float64(time.Millisecond)))
	},
	"ago": func(now time.Time, t sql.NullTime) string {
		if !t.Valid {
			return "never"
		}
		return fmtDuration(now.Sub(t.Time)) + " ago"
	},
}

const layout = `{{define "page"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{block "head" .}}{{end}}
<title>{{block "title" .}}roster{{end}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem 2rem;color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin:0 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
a{color:#0a58ca;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;margin-bottom:1rem}
th,td{padding:.3rem .65rem;border-bottom:1px solid #e3e3e6;text-align:left;vertical-align:top}
th{background:#f5f5f7;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.w{max-width:40rem;overflow-wrap:anywhere}
code{font:12px ui-monospace,monospace}
.s{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:12px;background:#eee}
.succeeded,.applied,.ok{background:#d9f2dc}.partial,.duplicate,.planned,.warning{background:#fff1c2}
.failed,.rejected,.error{background:#fbd5d5}.running,.processing{background:#d8e8fb}
.muted{color:#6e6e73}nav{margin-bottom:1rem}
</style></head><body>
<nav><a href="/">roster status</a> · <a href="/metrics">metrics</a> · <a href="/healthz">health</a></nav>
{{template "content" .}}
</body></html>{{end}}`

const indexContent = `{{define "head"}}<meta http-equiv="refresh" content="30">{{end}}
{{define "content"}}<h1>roster</h1>
<p class="muted">As of {{ts .Now}}; this page refreshes every 30 seconds.</p>
<h2>Tenants</h2>
<table><thead><tr><th>tenant</th><th>last run</th><th>status</th><th>started</th><th>finished</th><th>last success</th></tr></thead><tbody>
{{range .Tenants}}<tr><td>{{.ID}}</td>
{{if .RunID.Valid}}<td><a href="/runs/{{.RunID.Int64}}">#{{.RunID.Int64}}</a></td><td><span class="s {{.Status.String}}">{{.Status.String}}</span></td>
<td>{{nts .Started}}</td><td>{{nts .Finished}}</td>{{else}}<td colspan="4" class="muted">no runs yet</td>{{end}}
<td>{{ago $.Now .LastSuccess}}</td></tr>
{{else}}<tr><td colspan="6" class="muted">no tenants</td></tr>{{end}}
</tbody></table>
<h2>Recent runs</h2>
<table><thead><tr><th class="n">run</th><th>tenant</th><th>trigger</th><th>logical date</th><th>status</th><th class="n">files</th><th>started</th><th>duration</th><th>reason</th></tr></thead><tbody>
{{range .Runs}}<tr><td class="n"><a href="/runs/{{.ID}}">{{.ID}}</a></td><td>{{.Tenant}}</td><td>{{.Trigger}}{{if .DryRun}} (dry run){{end}}</td>
<td>{{date .LogicalDate}}</td><td><span class="s {{.Status}}">{{.Status}}</span>{{if .FailureClass}} <span class="muted">{{.FailureClass}}</span>{{end}}</td>
<td class="n">{{.Files}}</td><td>{{ts .Started}}</td><td>{{.Duration}}</td><td class="w">{{.FailureReason}}</td></tr>
{{else}}<tr><td colspan="9" class="muted">no runs yet</td></tr>{{end}}
</tbody></table>{{end}}`

const runContent = `{{define "title"}}roster run {{.Run.ID}}{{end}}
{{define "content"}}{{with .Run}}<h1>Run {{.ID}} <span class="s {{.Status}}">{{.Status}}</span></h1>
<table><tbody>
<tr><th>tenant</th><td>{{.Tenant}}</td></tr>
<tr><th>trigger</th><td>{{.Trigger}}{{if .DryRun}} (dry run){{end}}</td></tr>
<tr><th>logical date</th><td>{{date .LogicalDate}}</td></tr>
<tr><th>started</th><td>{{ts .Started}}</td></tr>
<tr><th>finished</th><td>{{nts .Finished}}</td></tr>
<tr><th>duration</th><td>{{.Duration}}</td></tr>
{{if .FailureClass}}<tr><th>failure</th><td class="w">{{.FailureClass}}: {{.FailureReason}}</td></tr>{{end}}
<tr><th>host</th><td>{{.Host}} (pid {{.PID}})</td></tr>
</tbody></table>{{end}}
<h2>Files</h2>
<table><thead><tr><th>file</th><th>kind</th><th>status</th><th class="n">rows</th><th class="n">created</th><th class="n">updated</th><th class="n">deactivated</th><th class="n">reactivated</th><th class="n">scheduled</th><th class="n">unchanged</th><th class="n">errors</th><th class="n">warnings</th><th>error</th></tr></thead><tbody>
{{range .Files}}<tr><td class="w">{{.Name}}<br><code class="muted" title="sha256">{{printf "%.12s" .SHA256}}</code> <span class="muted">{{.Size}} bytes</span></td><td>{{.Kind}}</td><td><span class="s {{.Status}}">{{.Status}}</span></td>
<td class="n">{{.Rows}}</td><td class="n">{{.Created}}</td><td class="n">{{.Updated}}</td><td class="n">{{.Deactivated}}</td><td class="n">{{.Reactivated}}</td><td class="n">{{.Scheduled}}</td><td class="n">{{.Unchanged}}</td>
<td class="n">{{.Errors}}</td><td class="n">{{.Warnings}}</td><td class="w">{{if .ErrorCode}}<code>{{.ErrorCode}}</code> {{end}}{{.Error}}</td></tr>
{{else}}<tr><td colspan="13" class="muted">no files</td></tr>{{end}}
</tbody></table>
<h2>Stages</h2>
<table><thead><tr><th>stage</th><th>file</th><th>status</th><th class="n">rows in</th><th class="n">rows out</th><th class="n">duration</th><th>error</th></tr></thead><tbody>
{{range .Stages}}<tr><td>{{.Stage}}</td><td class="w">{{if .File}}{{.File}}{{else}}<span class="muted">(run)</span>{{end}}</td><td><span class="s {{.Status}}">{{.Status}}</span></td>
<td class="n">{{.RowsIn}}</td><td class="n">{{.RowsOut}}</td><td class="n">{{ms .DurationMS}}</td><td class="w">{{.Error}}</td></tr>
{{else}}<tr><td colspan="7" class="muted">no stages</td></tr>{{end}}
</tbody></table>
<h2>Issues</h2>
{{if gt .IssuesTotal (len .Issues)}}<p class="muted">The first {{len .Issues}} of {{.IssuesTotal}} issues.</p>{{end}}
<table><thead><tr><th>file</th><th class="n">row</th><th>column</th><th>code</th><th>severity</th><th>message</th><th>value</th></tr></thead><tbody>
{{range .Issues}}<tr><td class="w">{{.File}}</td><td class="n">{{with .Row}}{{.}}{{end}}</td><td>{{.Column}}</td><td><code>{{.Code}}</code></td>
<td><span class="s {{.Severity}}">{{.Severity}}</span></td><td class="w">{{.Message}}</td><td class="w">{{.Value}}</td></tr>
{{else}}<tr><td colspan="7" class="muted">no issues</td></tr>{{end}}
</tbody></table>{{end}}`

var (
	base         = template.Must(template.New("layout").Funcs(funcs).Parse(layout))
	indexTmpl    = template.Must(template.Must(base.Clone()).Parse(indexContent))
	runTmpl      = template.Must(template.Must(base.Clone()).Parse(runContent))
	notFoundTmpl = template.Must(template.Must(base.Clone()).Parse(`{{define "title"}}roster: not found{{end}}
{{define "content"}}<h1>Not found</h1><p>There is no run {{.}}.</p>{{end}}`))
	errorTmpl = template.Must(template.Must(base.Clone()).Parse(`{{define "content"}}<h1>Unavailable</h1><p>{{.}}</p>{{end}}`))
)
