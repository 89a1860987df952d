package main

import (
	"context"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/export"
)

// maxExportDays bounds a --from/--to range (a typo in a year should not
// start a century of exports).
const maxExportDays = 3660

// exportJSON is the --json object of `roster export`: the partitions
// written, date by date, and the error that stopped the range, if any.
type exportJSON struct {
	Tenant  string          `json:"tenant"`
	Out     string          `json:"out"`
	Format  string          `json:"format"`
	Exports []export.Result `json:"exports"`
	Error   string          `json:"error,omitempty"`
}

func cmdExport(ctx context.Context, a *app, args []string) error {
	fs := flags("export")
	tenant := fs.String("tenant", "", "tenant ID")
	date := fs.String("date", "", "the date to export, YYYY-MM-DD (default: today in the tenant's time zone)")
	from := fs.String("from", "", "first date of a range, YYYY-MM-DD (instead of --date)")
	to := fs.String("to", "", "last date of the range, YYYY-MM-DD (default: --from)")
	out := fs.String("out", "", "output directory (default: <data-dir>/export)")
	format := fs.String("format", export.FormatParquet, "parquet or csv")
	compression := fs.String("compression", export.CompressionZstd, "Parquet compression: zstd or snappy")
	rowGroup := fs.Int("row-group-rows", export.DefaultRowGroupRows, "maximum rows per Parquet row group")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *tenant == "":
		return usagef("export: --tenant is required")
	case fs.NArg() > 0:
		return usagef("export: unexpected argument %q", fs.Arg(0))
	case *date != "" && (*from != "" || *to != ""):
		return usagef("export: --date excludes --from and --to")
	case *to != "" && *from == "":
		return usagef("export: --to needs --from")
	case *format != export.FormatParquet && *format != export.FormatCSV:
		return usagef("export: --format must be parquet or csv")
	case *compression != export.CompressionZstd && *compression != export.CompressionSnappy:
		return usagef("export: --compression must be zstd or snappy")
	case *rowGroup < 1:
		return usagef("export: --row-group-rows must be positive")
	}
	parseDate := func(flag, s string) (time.Time, error) {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return time.Time{}, usagef("export: --%s must be YYYY-MM-DD", flag)
		}
		return d, nil
	}
	var first, last time.Time
	var err error
	switch {
	case *date != "":
		if first, err = parseDate("date", *date); err != nil {
			return err
		}
		last = first
	case *from != "":
		if first, err = parseDate("from", *from); err != nil {
			return err
		}
		last = first
		if *to != "" {
			if last, err = parseDate("to", *to); err != nil {
				return err
			}
		}
		if last.Before(first) {
			return usagef("export: --to is before --from")
		}
		if days := int(last.Sub(first).Hours()/24) + 1; days > maxExportDays {
			return usagef("export: %d days is more than %d; export a shorter range", days, maxExportDays)
		}
	}
	if *out == "" {
		*out = filepath.Join(a.dataDir, "export")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	t, err := (pipeline.Tenants{DB: db}).Get(ctx, *tenant)
	if err != nil {
		return err
	}
	if first.IsZero() {
		first = t.Today(time.Now())
		last = first
	}
	opts := export.Options{Out: *out, Format: *format, Compression: *compression, RowGroupRows: *rowGroup}
	res := exportJSON{Tenant: t.ID, Out: *out, Format: *format, Exports: []export.Result{}}
	var failed error
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		r, err := export.Export(ctx, db, t.ID, d, opts)
		if err != nil {
			failed = fmt.Errorf("export %s: %w", d.Format(time.DateOnly), err)
			break
		}
		res.Exports = append(res.Exports, r)
	}
	if *asJSON {
		if failed != nil {
			res.Error = oneLine(failed)
		}
		if err := writeJSON(a.stdout, res); err != nil {
			return err
		}
		if failed != nil {
			fmt.Fprintln(a.stderr, "roster:", oneLine(failed))
			return exitError{exitFailed}
		}
		return nil
	}
	if len(res.Exports) > 0 {
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "DATE\tTABLE\tROWS\tFILE")
		for _, r := range res.Exports {
			for _, tr := range r.Tables {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", r.Date, tr.Table, tr.Rows, filepath.Join(tr.Dir, tr.File))
			}
		}
		w.Flush()
	}
	return failed
}
