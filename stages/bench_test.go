package stages_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages"
)

// benchStages builds the named stages from the registry with defaults.
func benchStages(b testing.TB, names ...string) []pipeline.Stage {
	b.Helper()
	reg := stages.Registry()
	var out []pipeline.Stage
	for _, n := range names {
		spec, err := reg.Lookup(n)
		if err != nil {
			b.Fatal(err)
		}
		s, err := spec.New(spec.Defaults())
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, s.(pipeline.Stage))
	}
	return out
}

func benchFile(b *testing.B, rows int) string {
	b.Helper()
	var buf bytes.Buffer
	if err := fixtures.WriteUsers(&buf, fixtures.UserOptions{Rows: rows, Seed: 42, PastDeactivations: 0.02, ApostropheIDs: 0.05}); err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "users.csv")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	return p
}

func runStages(b testing.TB, run *pipeline.Run, f *pipeline.File, st []pipeline.Stage) {
	for _, s := range st {
		if _, err := s.Process(context.Background(), run, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse100k: CSV → Arrow batches of text.
func BenchmarkParse100k(b *testing.B) {
	path := benchFile(b, 100_000)
	st := benchStages(b, "parse")
	run := &pipeline.Run{Tenant: pipeline.NewTenant("bench")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := &pipeline.File{Name: "users.csv", Plain: path}
		runStages(b, run, f, st)
		f.ReleaseBatches()
	}
}

// BenchmarkNormalizeValidate100k: text batches → typed, checked batches.
func BenchmarkNormalizeValidate100k(b *testing.B) {
	path := benchFile(b, 100_000)
	parse, rest := benchStages(b, "parse"), benchStages(b, "normalize", "validate")
	run := &pipeline.Run{Tenant: pipeline.NewTenant("bench")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := &pipeline.File{Name: "users.csv", Plain: path}
		runStages(b, run, f, parse)
		b.StartTimer()
		runStages(b, run, f, rest)
		b.StopTimer()
		f.ReleaseBatches()
		b.StartTimer()
	}
}

// BenchmarkDiff100kUnchanged: the diff of 100k rows against a snapshot
// holding the same 100k users (reading the snapshot included).
func BenchmarkDiff100kUnchanged(b *testing.B) {
	benchDiff(b, true, func(c pipeline.Counts) bool { return c.Unchanged == 100_000 })
}

// BenchmarkDiff100kFirstLoad: the diff of 100k rows for an empty tenant
// (every row a new user: the e-mail and id maps, managers new in the same
// file, a plan of 100k creates).
func BenchmarkDiff100kFirstLoad(b *testing.B) {
	benchDiff(b, false, func(c pipeline.Counts) bool { return c.Created == 100_000 })
}

// benchDiff times diff over the 100k-row file, the tenant loaded with it
// first or empty; want checks each diff did what is measured.
func benchDiff(b *testing.B, loaded bool, want func(pipeline.Counts) bool) {
	path := benchFile(b, 100_000)
	db, _ := pgtest.New(b)
	ctx := context.Background()
	if err := (pipeline.Tenants{DB: db}).Put(ctx, pipeline.NewTenant("bench")); err != nil {
		b.Fatal(err)
	}
	today := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if loaded {
		rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: b.TempDir(), Log: slog.New(slog.DiscardHandler)}
		if _, err := rn.Run(ctx, pipeline.Request{Tenant: "bench", LogicalDate: today, Files: []*pipeline.File{{Name: "users.csv", Source: path}}}); err != nil {
			b.Fatal(err)
		}
	}
	tenant, _ := pipeline.Tenants{DB: db}.Get(ctx, "bench")
	run := &pipeline.Run{Tenant: tenant, DB: db, LogicalDate: today}
	prep, diff := benchStages(b, "parse", "normalize", "validate"), benchStages(b, "diff")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := &pipeline.File{Name: "users.csv", Plain: path}
		runStages(b, run, f, prep)
		b.StartTimer()
		runStages(b, run, f, diff)
		b.StopTimer()
		if !want(f.Counts) {
			b.Fatalf("counts %+v, not what is measured", f.Counts)
		}
		f.ReleaseBatches()
		b.StartTimer()
	}
}
