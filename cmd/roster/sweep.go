package main

import (
	"context"
	"fmt"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/apply"
)

func cmdSweep(ctx context.Context, a *app, args []string) error {
	fs := flags("sweep")
	tenant := fs.String("tenant", "", "tenant ID")
	date := fs.String("date", "", "deactivate users whose deactivation_date is on or before this date, YYYY-MM-DD (default: today in the tenant's time zone)")
	dry := fs.Bool("dry-run", false, "list who would be deactivated; change nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tenant == "" {
		return usagef("sweep: --tenant is required")
	}
	var d time.Time
	if *date != "" {
		var err error
		if d, err = time.Parse(time.DateOnly, *date); err != nil {
			return usagef("sweep: --date must be YYYY-MM-DD")
		}
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	t, err := pipeline.Tenants{DB: db}.Get(ctx, *tenant)
	if err != nil {
		return err
	}
	res, err := apply.Sweep(ctx, db, t, apply.SweepOptions{Date: d, Trigger: pipeline.TriggerManual, DryRun: *dry})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(a.stdout, res)
	}
	verb := "deactivated"
	if res.DryRun {
		verb = "would deactivate"
	}
	fmt.Fprintf(a.stdout, "sweep of %s for %s: %s %d user(s)\n", res.Tenant, res.Date.Format(time.DateOnly), verb, len(res.Users))
	for _, u := range res.Users {
		fmt.Fprintf(a.stdout, "  %s %s (deactivation date %s)\n", u.EmployeeID, u.Email, u.DeactivationDate.Format(time.DateOnly))
	}
	return nil
}
