package export

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/roster-hr/roster/pipeline"
)

// Spec declares the stage: once per run, after apply, it rewrites the
// run's logical date's partitions. It does nothing in a dry run or for a
// tenant whose export is off.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name: "export",
		Summary: "Writes the analytics tables (employee_snapshot, employee_profile_history, employee_events, department_hierarchy) " +
			"for the run's tenant and logical date as Hive-style Parquet partitions OUT/<table>/tenant=<id>/dt=<date>/. " +
			"Runs once per run, after apply; skipped in a dry run and for tenants with export disabled.",
		Scope: pipeline.PerRun,
		Fields: []pipeline.Field{
			{Name: "out", Default: "", Help: "output directory; empty: `export` beside the staging directory (<data-dir>/export)"},
			{Name: "format", Default: FormatParquet, Help: "`parquet` or `csv`"},
			{Name: "compression", Default: CompressionZstd, Help: "Parquet compression: `zstd` or `snappy`"},
			{Name: "row_group_rows", Default: DefaultRowGroupRows, Help: "maximum rows per Parquet row group"},
		},
		New: func(o pipeline.Options) (any, error) {
			opts := Options{Out: o.String("out"), Format: o.String("format"), Compression: o.String("compression"),
				RowGroupRows: o.Int("row_group_rows")}
			if _, err := opts.normalize(); err != nil {
				return nil, err
			}
			return stage{opts: opts}, nil
		},
	}
}

type stage struct{ opts Options }

// OutDir is where the stage writes when its out option is empty: export/
// beside the staging directory, which for roster's commands is
// <data-dir>/export, the default of `roster export` too.
func OutDir(stagingDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(stagingDir)), "export")
}

func (s stage) Finish(ctx context.Context, run *pipeline.Run, _ []*pipeline.File) (pipeline.Stats, error) {
	if run.DryRun || run.Tenant == nil || !run.Tenant.ExportEnabled {
		return pipeline.Stats{}, nil
	}
	opts := s.opts
	if opts.Out == "" {
		if run.StagingDir == "" {
			return pipeline.Stats{}, fmt.Errorf("export: no output directory and no staging directory")
		}
		opts.Out = OutDir(run.StagingDir)
	}
	if run.Mem != nil {
		opts.Allocator = run.Mem
	}
	res, err := Export(ctx, run.DB, run.Tenant.ID, run.LogicalDate, opts)
	if err != nil {
		return pipeline.Stats{}, err
	}
	if run.Log != nil {
		run.Log.Info("exported", "date", res.Date, "out", res.Out, "rows", res.Rows())
	}
	n := res.Rows()
	return pipeline.Stats{RowsIn: n, RowsOut: n}, nil
}
