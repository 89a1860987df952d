package status_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/roster-hr/roster/jobs/status"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

const header = "employee_id,email,first_name,last_name,manager_email,department_name,title,location,start_date,deactivation_date\n"

// ledger is a test database with real runs made through the pipeline, by a
// pool of its own (as another process would).
type ledger struct {
	db, other *sqlx.DB
	url       string
	runs      map[string]*pipeline.Result // good, rejected, partial
	evil      string                      // the rejected file's name
}

func newLedger(t *testing.T) *ledger {
	t.Helper()
	db, url := pgtest.New(t)
	ctx := context.Background()
	for _, id := range []string{"acme", "beta"} {
		if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant(id)); err != nil {
			t.Fatal(err)
		}
	}
	other, err := pipeline.OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	return &ledger{db: db, other: other, url: url, runs: map[string]*pipeline.Result{},
		evil: `<script>alert("x")</script>.csv`}
}

// makeRuns makes three runs of acme: a good file (succeeded), a file of an
// unknown kind with HTML in its name (failed: unknown_file_kind), and a file
// with a bad e-mail row (partial).
func (l *ledger) makeRuns(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	rn := &pipeline.Runner{DB: l.other, Registry: stages.Registry(), StagingDir: filepath.Join(dir, "staging"),
		Log: slog.New(slog.DiscardHandler)}
	run := func(key, name, body string) {
		p := filepath.Join(dir, key+".csv")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := rn.Run(context.Background(), pipeline.Request{Tenant: "acme",
			LogicalDate: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC),
			Files:       []*pipeline.File{{Name: name, Source: p}}})
		if err != nil {
			t.Fatalf("run %s: %v", key, err)
		}
		l.runs[key] = res
	}
	run("good", "users.csv", header+
		"1,ann@example.com,Ann,Lee,,,Engineer,Paris,2024-01-15,\n"+
		"2,bob@example.com,Bob,Ray,ann@example.com,,Engineer,Paris,2024-02-01,\n")
	run("rejected", l.evil, "foo,bar\n1,2\n")
	run("partial", "users-2.csv", header+
		"1,ann@example.com,Ann,Lee,,,Staff Engineer,Paris,2024-01-15,\n"+
		"2,bob@example.com,Bob,Ray,ann@example.com,,Engineer,Paris,2024-02-01,\n"+
		"3,not-an-email,Cy,Fox,,,Engineer,Paris,2024-03-01,\n"+
		"4,dee@example.com,Dee,Kim,,,Engineer,Paris,2024-03-01,\n")
	for key, want := range map[string]string{"good": pipeline.RunSucceeded, "rejected": pipeline.RunFailed, "partial": pipeline.RunPartial} {
		if got := l.runs[key].Status; got != want {
			t.Fatalf("run %s: status %s, want %s (%s)", key, got, want, l.runs[key].Reason)
		}
	}
}

func (l *ledger) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := l.db.Get(&n, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

type families map[string]*dto.MetricFamily

func scrape(t *testing.T, base string) families {
	t.Helper()
	code, body, _ := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the one sample of family name with the given
// labels ("k=v" pairs), failing when there is none.
func (f families) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := f.find(name, labels...)
	if m == nil {
		t.Fatalf("no sample %s%v", name, labels)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is not a plain sample", name, labels)
	return 0
}

func (f families) find(name string, labels ...string) *dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func TestMetrics(t *testing.T) {
	l := newLedger(t)
	srv := httptest.NewServer(status.Handler(l.db, status.WithLogger(slog.New(slog.DiscardHandler)),
		status.WithWaiting(func(context.Context) (map[string]int, error) { return map[string]int{"acme": 2}, nil })))
	defer srv.Close()

	// Before any run, every tenant has its series.
	f := scrape(t, srv.URL)
	for _, tenant := range []string{"acme", "beta"} {
		for _, st := range []string{"succeeded", "partial", "failed"} {
			if v := f.value(t, "roster_runs_total", "tenant="+tenant, "status="+st); v != 0 {
				t.Errorf("before runs: runs_total{%s,%s} = %v", tenant, st, v)
			}
		}
		if v := f.value(t, "roster_seconds_since_last_success", "tenant="+tenant); v != -1 {
			t.Errorf("before runs: seconds_since_last_success{%s} = %v", tenant, v)
		}
	}
	if f["roster_stage_duration_seconds"] != nil && len(f["roster_stage_duration_seconds"].Metric) > 0 {
		t.Errorf("stage histogram before any stage ran: %v", f["roster_stage_duration_seconds"])
	}

	// Runs made by another pool (another process, as far as the handler
	// knows) show at the next scrape.
	l.makeRuns(t)
	f = scrape(t, srv.URL)
	for st, want := range map[string]float64{"succeeded": 1, "partial": 1, "failed": 1} {
		if v := f.value(t, "roster_runs_total", "tenant=acme", "status="+st); v != want {
			t.Errorf("runs_total{acme,%s} = %v, want %v", st, v, want)
		}
		if v := f.value(t, "roster_runs_total", "tenant=beta", "status="+st); v != 0 {
			t.Errorf("runs_total{beta,%s} = %v, want 0", st, v)
		}
	}
	if f["roster_runs_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("roster_runs_total is a %v", f["roster_runs_total"].GetType())
	}
	if v := f.value(t, "roster_runs_running", "tenant=acme"); v != 0 {
		t.Errorf("runs_running{acme} = %v", v)
	}
	for st, want := range map[string]float64{"applied": 2, "rejected": 1, "duplicate": 0, "failed": 0} {
		if v := f.value(t, "roster_files_total", "tenant=acme", "status="+st); v != want {
			t.Errorf("files_total{acme,%s} = %v, want %v", st, v, want)
		}
		if v := f.value(t, "roster_files_total", "tenant=beta", "status="+st); v != 0 {
			t.Errorf("files_total{beta,%s} = %v, want 0", st, v)
		}
	}
	var sum pipeline.Counts
	for _, res := range l.runs {
		for _, file := range res.Files {
			if file.Status == pipeline.StatusApplied {
				sum.Created += file.Counts.Created
				sum.Updated += file.Counts.Updated
				sum.Unchanged += file.Counts.Unchanged
			}
		}
	}
	if sum.Created != 3 || sum.Updated != 1 || sum.Unchanged != 1 {
		t.Fatalf("the runs counted %+v, want 3 created, 1 updated, 1 unchanged", sum)
	}
	for action, want := range map[string]int{"created": sum.Created, "updated": sum.Updated, "unchanged": sum.Unchanged, "deactivated": 0} {
		if v := f.value(t, "roster_rows_total", "tenant=acme", "action="+action); v != float64(want) {
			t.Errorf("rows_total{acme,%s} = %v, want %d", action, v, want)
		}
		if v := f.value(t, "roster_rows_total", "tenant=beta", "action="+action); v != 0 {
			t.Errorf("rows_total{beta,%s} = %v", action, v)
		}
	}
	var last float64
	if err := l.db.Get(&last, `SELECT extract(epoch FROM max(finished_at))::float8 FROM runs WHERE tenant_id = 'acme' AND status IN ('succeeded', 'partial')`); err != nil {
		t.Fatal(err)
	}
	if v := f.value(t, "roster_last_success_timestamp_seconds", "tenant=acme"); v != last {
		t.Errorf("last_success{acme} = %v, want %v", v, last)
	}
	if v := f.value(t, "roster_seconds_since_last_success", "tenant=acme"); v < 0 || v > 600 {
		t.Errorf("seconds_since_last_success{acme} = %v", v)
	}
	if v := f.value(t, "roster_last_success_timestamp_seconds", "tenant=beta"); v != 0 {
		t.Errorf("last_success{beta} = %v, want 0", v)
	}
	if v := f.value(t, "roster_seconds_since_last_success", "tenant=beta"); v != -1 {
		t.Errorf("seconds_since_last_success{beta} = %v, want -1", v)
	}
	if v := f.value(t, "roster_files_waiting", "tenant=acme"); v != 2 {
		t.Errorf("files_waiting{acme} = %v", v)
	}
	if v := f.value(t, "roster_files_waiting", "tenant=beta"); v != 0 {
		t.Errorf("files_waiting{beta} = %v", v)
	}
	if v := f.value(t, "roster_ledger_up"); v != 1 {
		t.Errorf("ledger_up = %v", v)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if f[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	checkHistogram(t, l, f)

	// Le semantics at the bounds: a stage of exactly 5 ms is in the 0.005
	// bucket, one of 0 ms in the first, one over the last bound only in +Inf.
	if _, err := l.db.Exec(`INSERT INTO run_stages (run_id, stage, duration_ms) VALUES ($1, 'edge', 5), ($1, 'edge', 0), ($1, 'edge', 5.0001), ($1, 'edge', 700000)`,
		l.runs["good"].RunID); err != nil {
		t.Fatal(err)
	}
	f = scrape(t, srv.URL)
	checkHistogram(t, l, f)
	h := f.find("roster_stage_duration_seconds", "stage=edge").GetHistogram()
	for _, b := range h.GetBucket() {
		var want uint64
		switch ub := b.GetUpperBound(); {
		case ub < 0.005:
			want = 1
		case ub < 0.01:
			want = 2
		case ub <= 600:
			want = 3
		default:
			want = 4
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("edge bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	if h.GetSampleCount() != 4 || math.Abs(h.GetSampleSum()-700.0100001) > 1e-6 {
		t.Errorf("edge: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
}

// checkHistogram compares roster_stage_duration_seconds with run_stages.
func checkHistogram(t *testing.T, l *ledger, f families) {
	t.Helper()
	fam := f["roster_stage_duration_seconds"]
	if fam == nil || fam.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("roster_stage_duration_seconds: %v", fam)
	}
	var total uint64
	for _, m := range fam.Metric {
		stage := m.Label[0].GetValue()
		h := m.GetHistogram()
		total += h.GetSampleCount()
		if want := l.count(t, `SELECT count(*) FROM run_stages WHERE stage = $1 AND status <> 'skipped'`, stage); h.GetSampleCount() != uint64(want) {
			t.Errorf("stage %s: count %d, want %d", stage, h.GetSampleCount(), want)
		}
		var sum float64
		if err := l.db.Get(&sum, `SELECT sum(duration_ms) / 1000.0 FROM run_stages WHERE stage = $1 AND status <> 'skipped'`, stage); err != nil {
			t.Fatal(err)
		}
		if math.Abs(h.GetSampleSum()-sum) > 1e-9 {
			t.Errorf("stage %s: sum %v, want %v", stage, h.GetSampleSum(), sum)
		}
		// The text format adds the +Inf bucket.
		if len(h.GetBucket()) != len(status.DurationBuckets)+1 {
			t.Errorf("stage %s: %d buckets", stage, len(h.GetBucket()))
		}
		for _, b := range h.GetBucket() {
			if math.IsInf(b.GetUpperBound(), 1) {
				if b.GetCumulativeCount() != h.GetSampleCount() {
					t.Errorf("stage %s le=+Inf: %d, count %d", stage, b.GetCumulativeCount(), h.GetSampleCount())
				}
				continue
			}
			want := l.count(t, `SELECT count(*) FROM run_stages WHERE stage = $1 AND status <> 'skipped' AND duration_ms / 1000.0 <= $2`, stage, b.GetUpperBound())
			if b.GetCumulativeCount() != uint64(want) {
				t.Errorf("stage %s le=%v: %d, want %d", stage, b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
	}
	if want := l.count(t, `SELECT count(*) FROM run_stages WHERE status <> 'skipped'`); total != uint64(want) || want == 0 {
		t.Errorf("histogram count %d, run_stages has %d rows that ran", total, want)
	}
	// The default pipeline leaves the export to the nightly job: every run
	// records it as skipped, with the reason, and it is no observation.
	if n := l.count(t, `SELECT count(*) FROM run_stages WHERE stage = 'export' AND status = 'skipped' AND error LIKE '%nightly%'`); n == 0 {
		t.Errorf("no run recorded the export as skipped (nightly)")
	}
	for _, m := range fam.Metric {
		if m.Label[0].GetValue() == "export" {
			t.Errorf("the skipped exports are in the stage histogram: %d observations", m.GetHistogram().GetSampleCount())
		}
	}
}

func TestPages(t *testing.T) {
	l := newLedger(t)
	l.makeRuns(t)
	srv := httptest.NewServer(status.Handler(l.db, status.WithLogger(slog.New(slog.DiscardHandler))))
	defer srv.Close()

	code, body, hdr := get(t, srv.URL+"/")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("/: %d %s\n%s", code, hdr.Get("Content-Type"), body)
	}
	for _, want := range []string{"acme", "beta", "no runs yet", "succeeded", "partial", "failed", "manual", "2026-03-02", "unknown_file_kind"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %q", want)
		}
	}
	for _, res := range l.runs {
		if !strings.Contains(body, fmt.Sprintf(`href="/runs/%d"`, res.RunID)) {
			t.Errorf("/ lacks a link to run %d", res.RunID)
		}
	}
	// The rejected run's reason names the file: escaped.
	if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("/ does not escape the file name in the reason:\n%s", body)
	}

	code, body, _ = get(t, fmt.Sprintf("%s/runs/%d", srv.URL, l.runs["rejected"].RunID))
	if code != http.StatusOK {
		t.Fatalf("rejected run: %d\n%s", code, body)
	}
	for _, want := range []string{"unknown_file_kind", "rejected", "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.csv", "fetch", "parse"} {
		if !strings.Contains(body, want) {
			t.Errorf("rejected run page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Errorf("rejected run page has a raw <script>")
	}

	code, body, _ = get(t, fmt.Sprintf("%s/runs/%d", srv.URL, l.runs["partial"].RunID))
	if code != http.StatusOK {
		t.Fatalf("partial run: %d\n%s", code, body)
	}
	var codes []string
	if err := l.db.Select(&codes, `SELECT DISTINCT code FROM issues WHERE run_id = $1`, l.runs["partial"].RunID); err != nil || len(codes) == 0 {
		t.Fatalf("issues of the partial run: %v %v", codes, err)
	}
	// The row number, printed as a number (row 4 holds not-an-email).
	for _, want := range append(codes, "users-2.csv", "applied", "not-an-email", "validate", "apply", `<td class="w">users-2.csv</td><td class="n">4</td>`) {
		if !strings.Contains(body, want) {
			t.Errorf("partial run page lacks %q", want)
		}
	}

	for _, path := range []string{"/runs/999999", "/runs/abc", "/runs/-1", "/nope"} {
		if code, _, _ := get(t, srv.URL+path); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", resp.StatusCode)
	}
}

func health(t *testing.T, base string) (int, status.Health) {
	t.Helper()
	code, body, _ := get(t, base+"/healthz")
	var h status.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/healthz body %q: %v", body, err)
	}
	return code, h
}

func TestHealthz(t *testing.T) {
	l := newLedger(t)
	pool, err := sqlx.Open("postgres", l.url)
	if err != nil {
		t.Fatal(err)
	}
	quiet := status.WithLogger(slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(status.Handler(pool, quiet, status.WithCheck("sftp", func(context.Context) error { return nil })))
	defer srv.Close()
	code, h := health(t, srv.URL)
	if code != http.StatusOK || h.Status != "ok" || h.Checks["database"].Status != "ok" || h.Checks["sftp"].Status != "ok" {
		t.Errorf("healthy: %d %+v", code, h)
	}

	// A failing extra check is named.
	bad := httptest.NewServer(status.Handler(l.db, quiet, status.WithTimeout(200*time.Millisecond),
		status.WithCheck("sftp", func(context.Context) error { return errors.New("store unreachable") }),
		status.WithCheck("slow", func(ctx context.Context) error { time.Sleep(time.Minute); return nil })))
	defer bad.Close()
	start := time.Now()
	code, h = health(t, bad.URL)
	if code != http.StatusServiceUnavailable || h.Status != "fail" || h.Checks["database"].Status != "ok" ||
		h.Checks["sftp"].Status != "fail" || h.Checks["sftp"].Error != "store unreachable" || h.Checks["slow"].Status != "fail" {
		t.Errorf("failing check: %d %+v", code, h)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a hanging check took %v", d)
	}

	// The database gone: 503 naming it, and /metrics still answers with
	// the runtime's series and roster_ledger_up 0.
	pool.Close()
	code, h = health(t, srv.URL)
	if code != http.StatusServiceUnavailable || h.Status != "fail" || h.Checks["database"].Status != "fail" || h.Checks["database"].Error == "" {
		t.Errorf("database closed: %d %+v", code, h)
	}
	f := scrape(t, srv.URL)
	if v := f.value(t, "roster_ledger_up"); v != 0 {
		t.Errorf("ledger_up = %v with the database closed", v)
	}
	if f["go_goroutines"] == nil || f["roster_runs_total"] != nil {
		t.Errorf("families with the database closed: go_goroutines %v, roster_runs_total %v", f["go_goroutines"] != nil, f["roster_runs_total"] != nil)
	}
}
