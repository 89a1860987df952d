package main

import (
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/roster-hr/roster/pipeline"
)

// userRow is one line of `roster users`.
type userRow struct {
	EmployeeID       string `db:"employee_id" json:"employee_id"`
	Email            string `db:"email" json:"email"`
	FirstName        string `db:"first_name" json:"first_name"`
	LastName         string `db:"last_name" json:"last_name"`
	ManagerEmail     string `db:"manager_email" json:"manager_email"`
	DepartmentName   string `db:"department_name" json:"department_name"`
	Title            string `db:"title" json:"title"`
	Location         string `db:"location" json:"location"`
	StartDate        string `db:"start_date" json:"start_date"`
	DeactivationDate string `db:"deactivation_date" json:"deactivation_date"`
	Active           bool   `db:"active" json:"active"`
}

// snapshot prints a tenant's rows of one directory table as CSV or JSON:
// the shared body of `roster users` and `roster departments`.
func snapshot[T any](ctx context.Context, a *app, name string, args []string, query string, header []string, cells func(T) []string) error {
	fs := flags(name)
	tenant := fs.String("tenant", "", "tenant ID")
	format := fs.String("format", "csv", "csv or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tenant == "" {
		return usagef("%s: --tenant is required", name)
	}
	if *format != "csv" && *format != "json" {
		return usagef("%s: --format must be csv or json", name)
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	if _, err := (pipeline.Tenants{DB: db}).Get(ctx, *tenant); err != nil {
		return err
	}
	rows := []T{}
	if err := db.SelectContext(ctx, &rows, query, *tenant); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if *format == "json" {
		return writeJSON(a.stdout, rows)
	}
	w := csv.NewWriter(a.stdout)
	w.Write(header) //nolint:errcheck // checked by w.Error
	for _, r := range rows {
		w.Write(cells(r)) //nolint:errcheck
	}
	w.Flush()
	return w.Error()
}

func cmdUsers(ctx context.Context, a *app, args []string) error {
	return snapshot(ctx, a, "users", args, `SELECT COALESCE(u.employee_id, '') AS employee_id, u.email, u.first_name, u.last_name,
		COALESCE(m.email, '') AS manager_email, COALESCE(d.name, '') AS department_name, u.title, u.location,
		COALESCE(to_char(u.start_date, 'YYYY-MM-DD'), '') AS start_date,
		COALESCE(to_char(u.deactivation_date, 'YYYY-MM-DD'), '') AS deactivation_date, u.active
		FROM users u LEFT JOIN users m ON m.tenant_id = u.tenant_id AND m.id = u.manager_id LEFT JOIN departments d ON d.id = u.department_id
		WHERE u.tenant_id = $1 ORDER BY u.email, u.id`,
		[]string{"employee_id", "email", "first_name", "last_name", "manager_email", "department_name", "title", "location", "start_date", "deactivation_date", "active"},
		func(r userRow) []string {
			return []string{r.EmployeeID, r.Email, r.FirstName, r.LastName, r.ManagerEmail, r.DepartmentName, r.Title, r.Location, r.StartDate, r.DeactivationDate, strconv.FormatBool(r.Active)}
		})
}

type deptRow struct {
	Name   string `db:"name" json:"name"`
	Parent string `db:"parent" json:"parent"`
	Active bool   `db:"active" json:"active"`
}

func cmdDepartments(ctx context.Context, a *app, args []string) error {
	return snapshot(ctx, a, "departments", args, `SELECT d.name, COALESCE(p.name, '') AS parent, d.active
		FROM departments d LEFT JOIN departments p ON p.id = d.parent_id WHERE d.tenant_id = $1 ORDER BY d.name_key`,
		[]string{"name", "parent", "active"},
		func(r deptRow) []string { return []string{r.Name, r.Parent, strconv.FormatBool(r.Active)} })
}

// runSummary is one line of `roster runs list --json`.
type runSummary struct {
	RunID         int64      `db:"id" json:"run_id"`
	Tenant        string     `db:"tenant_id" json:"tenant"`
	Trigger       string     `db:"trigger" json:"trigger"`
	LogicalDate   string     `db:"logical_date" json:"logical_date"`
	Status        string     `db:"status" json:"status"`
	StartedAt     time.Time  `db:"started_at" json:"started_at"`
	FinishedAt    *time.Time `db:"finished_at" json:"finished_at"`
	FailureClass  *string    `db:"failure_class" json:"failure_class,omitempty"`
	FailureReason string     `db:"failure_reason" json:"failure_reason,omitempty"`
	Files         int        `db:"files" json:"files"`
}

const runSelect = `SELECT r.id, r.tenant_id, r.trigger, to_char(r.logical_date, 'YYYY-MM-DD') AS logical_date, r.status,
	r.started_at, r.finished_at, r.failure_class, r.failure_reason,
	(SELECT count(*) FROM run_files f WHERE f.run_id = r.id) AS files FROM runs r`

func cmdRuns(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usagef("runs: say list or show RUN_ID")
	}
	switch args[0] {
	case "list":
		return runsList(ctx, a, args[1:])
	case "show":
		return runsShow(ctx, a, args[1:])
	}
	return usagef("runs: unknown subcommand %q (list, show)", args[0])
}

func runsList(ctx context.Context, a *app, args []string) error {
	fs := flags("runs list")
	tenant := fs.String("tenant", "", "only this tenant")
	trigger := fs.String("trigger", "", "only runs with this trigger: scheduled, manual, backfill")
	status := fs.String("status", "", "only runs with this status: running, succeeded, partial, failed")
	since := fs.String("since", "", "only runs started on or after this date (YYYY-MM-DD)")
	limit := fs.Int("limit", 100, "at most this many runs, newest first")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var sinceT any
	if *since != "" {
		t, err := time.Parse(time.DateOnly, *since)
		if err != nil {
			return usagef("runs list: --since must be YYYY-MM-DD")
		}
		sinceT = t
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	var runs []runSummary
	if err := db.SelectContext(ctx, &runs, runSelect+` WHERE ($1 = '' OR r.tenant_id = $1) AND ($2 = '' OR r.trigger = $2)
		AND ($3 = '' OR r.status = $3) AND ($4::timestamptz IS NULL OR r.started_at >= $4::timestamptz)
		ORDER BY r.id DESC LIMIT $5`, *tenant, *trigger, *status, sinceT, *limit); err != nil {
		return fmt.Errorf("read runs: %w", err)
	}
	if *asJSON {
		if runs == nil {
			runs = []runSummary{}
		}
		return writeJSON(a.stdout, runs)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tTENANT\tTRIGGER\tDATE\tSTATUS\tFILES\tSTARTED\tDURATION")
	for _, r := range runs {
		dur := "-"
		if r.FinishedAt != nil {
			dur = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.RunID, r.Tenant, r.Trigger, r.LogicalDate, r.Status, r.Files,
			r.StartedAt.Local().Format("2006-01-02 15:04:05"), dur)
	}
	return w.Flush()
}

func runsShow(ctx context.Context, a *app, args []string) error {
	fs := flags("runs show")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("runs show: give one RUN_ID")
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil {
		return usagef("runs show: %q is not a run id", fs.Arg(0))
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	var run runSummary
	if err := db.GetContext(ctx, &run, runSelect+` WHERE r.id = $1`, id); err == sql.ErrNoRows {
		return usagef("runs show: no run %d", id)
	} else if err != nil {
		return fmt.Errorf("read run %d: %w", id, err)
	}
	rec, err := pipeline.ReadRunRecords(ctx, db, id, 0)
	if err != nil {
		return err
	}
	files, stages, issues := rec.Files, rec.Stages, rec.Issues
	if *asJSON {
		return writeJSON(a.stdout, struct {
			runSummary
			Files  []pipeline.FileRecord  `json:"files"`
			Stages []pipeline.StageRecord `json:"stages"`
			Issues []pipeline.IssueRecord `json:"issues"`
		}{run, files, stages, issues})
	}
	fmt.Fprintf(a.stdout, "run %d  tenant %s  %s  date %s  %s\n", run.RunID, run.Tenant, run.Trigger, run.LogicalDate, run.Status)
	if run.FailureReason != "" {
		fmt.Fprintf(a.stdout, "reason: %s\n", run.FailureReason)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nFILE\tKIND\tSTATUS\tROWS\tCREATED\tUPDATED\tDEACTIVATED\tREACTIVATED\tSCHEDULED\tUNCHANGED\tERRORS\tWARNINGS")
	for _, f := range files {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Name, f.Kind, f.Status, f.Rows, f.Created, f.Updated,
			f.Deactivated, f.Reactivated, f.Scheduled, f.Unchanged, f.Errors, f.Warnings)
	}
	fmt.Fprintln(w, "\nFILE\tSTAGE\tSTATUS\tROWS IN\tROWS OUT\tDURATION")
	for _, s := range stages {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%.1f ms\n", s.File, s.Stage, s.Status, s.RowsIn, s.RowsOut, s.DurationMS)
	}
	w.Flush()
	if len(issues) > 0 {
		fmt.Fprintf(a.stdout, "\nissues (%d):\n", len(issues))
		for _, is := range issues {
			loc := "file"
			if is.Row != nil {
				loc = fmt.Sprintf("row %d", *is.Row)
			}
			fmt.Fprintf(a.stdout, "  %s  %s %s %s %s: %s\n", is.File, is.Severity, is.Code, loc, is.Column, is.Message)
		}
	}
	return nil
}
