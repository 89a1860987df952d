package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/stages/export"
	"golang.org/x/term"
)

func cmdBackfill(ctx context.Context, a *app, args []string) error {
	fs := flags("backfill")
	tenant := fs.String("tenant", "", "tenant ID")
	from := fs.String("from", "", "first logical date, YYYY-MM-DD")
	to := fs.String("to", "", "last logical date, YYYY-MM-DD (default: --from)")
	reprocess := fs.String("reprocess", jobs.ReprocessMissing, "which dates to run: missing (no finished run), failed (also dates whose last run failed) or all")
	dry := fs.Bool("dry-run", false, "list every date with its decision and reason; run nothing")
	asJSON := fs.Bool("json", false, "print the dates and decisions as JSON")
	exportOnly := fs.Bool("export-only", false, "rewrite only the analytics partitions of every date (no file is run)")
	out := fs.String("out", "", "with --export-only: root directory of the partitions (default <data-dir>/export)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tenant == "" || *from == "" {
		return usagef("backfill: --tenant and --from are required")
	}
	if *to == "" {
		*to = *from
	}
	f, err1 := time.Parse(time.DateOnly, *from)
	t, err2 := time.Parse(time.DateOnly, *to)
	if err1 != nil || err2 != nil {
		return usagef("backfill: dates are YYYY-MM-DD")
	}
	if t.Before(f) {
		return usagef("backfill: --to is before --from")
	}
	if t.Sub(f) > 3660*24*time.Hour {
		return usagef("backfill: the range is longer than ten years")
	}
	switch *reprocess {
	case jobs.ReprocessMissing, jobs.ReprocessFailed, jobs.ReprocessAll:
	default:
		return usagef("backfill: --reprocess must be missing, failed or all")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	rn, err := a.runner(db)
	if err != nil {
		return err
	}
	b := &jobs.Backfill{Runner: rn, Tenant: *tenant, From: f, To: t, Reprocess: *reprocess,
		KeyPassphrase: []byte(os.Getenv("ROSTER_KEY_PASSPHRASE"))}
	if *exportOnly {
		dir := *out
		if dir == "" {
			dir = filepath.Join(a.dataDir, "export")
		}
		b.ExportOnly = func(ctx context.Context, date time.Time) error {
			_, err := export.Export(ctx, db, *tenant, date, export.Options{Out: dir})
			return err
		}
	}
	var plan []jobs.Decision
	if *dry {
		plan, _, err = b.Plan(ctx)
	} else {
		if !*asJSON {
			b.Progress = progressPrinter(a)
		}
		plan, err = b.Run(ctx)
	}
	if plan != nil {
		if *asJSON {
			if jerr := writeJSON(a.stdout, plan); jerr != nil {
				return jerr
			}
		} else {
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DATE\tDECISION\tREASON\tFILES\tRUN\tSTATUS")
			for _, d := range plan {
				run := ""
				if d.RunID > 0 {
					run = fmt.Sprint(d.RunID)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Date, d.Decision, d.Reason, strings.Join(d.Files, " "), run, d.Status)
			}
			w.Flush()
		}
	}
	if err != nil {
		return err
	}
	for _, d := range plan {
		if d.Status == "failed" {
			return exitError{exitFailed}
		}
	}
	return nil
}

// progressPrinter shows a progress bar on a terminal and plain lines
// otherwise (logs, CI).
func progressPrinter(a *app) func(jobs.Progress) {
	tty := false
	if f, ok := a.stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return func(p jobs.Progress) {
		if !tty {
			fmt.Fprintf(a.stderr, "backfill: %s done (%d/%d dates, %d rows, ETA %s)\n", p.Date, p.Done, p.Total, p.Rows, p.ETA().Round(time.Second))
			return
		}
		const width = 30
		filled := width * p.Done / max(p.Total, 1)
		fmt.Fprintf(a.stderr, "\r[%s%s] %d/%d dates  %d rows  ETA %s ", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
			p.Done, p.Total, p.Rows, p.ETA().Round(time.Second))
		if p.Done == p.Total {
			fmt.Fprintln(a.stderr)
		}
	}
}
