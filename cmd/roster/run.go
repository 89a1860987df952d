package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/fetch/store"
)

// openStore opens the tenant's SFTP store: an external server named by
// --store, or the embedded server's data dir.
func (a *app) openStore(ctx context.Context, tenant, rawURL, key, knownHosts, hostKey string, stableAfter time.Duration) (pipeline.Store, func(), error) {
	if rawURL == "" {
		return store.Local(filepath.Join(a.sftpRoot(), tenant)), func() {}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "sftp" || u.Host == "" || u.User == nil {
		return nil, nil, usagef("run: --store must look like sftp://user@host:port[/root]")
	}
	if knownHosts == "" && hostKey == "" {
		return nil, nil, usagef("run: --store needs --known-hosts or --host-key: roster never connects without verifying the server")
	}
	pw, _ := u.User.Password()
	s, err := store.DialSFTP(ctx, store.SFTPConfig{Addr: u.Host, User: u.User.Username(), KeyFile: key, Password: pw,
		KnownHostsFile: knownHosts, HostKeyFingerprint: hostKey, Root: strings.TrimPrefix(u.Path, "/"), StableAfter: stableAfter})
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", u.Host, err)
	}
	// Network hiccups mid-listing or mid-download are retried with backoff;
	// the remote file stays where it is until the run moves it.
	return store.Retry(s, 4, time.Second), func() { s.Close() }, nil
}

// runJSON is the --json contract of `roster run`.
type runJSON struct {
	RunID  int64      `json:"run_id"`
	Tenant string     `json:"tenant"`
	Status string     `json:"status"`
	DryRun bool       `json:"dry_run"`
	Class  string     `json:"failure_class,omitempty"`
	Reason string     `json:"failure_reason,omitempty"`
	Files  []fileJSON `json:"files"`
}

type fileJSON struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	pipeline.Counts
	Errors   int              `json:"errors"`
	Warnings int              `json:"warnings"`
	Error    string           `json:"error"`
	Issues   []pipeline.Issue `json:"issues"`
}

func toJSON(res *pipeline.Result) runJSON {
	out := runJSON{RunID: res.RunID, Tenant: res.Tenant, Status: res.Status, DryRun: res.DryRun,
		Class: string(res.FailureClass), Files: []fileJSON{}}
	if res.FailureClass == pipeline.ClassSystem {
		out.Reason = res.Reason
	}
	for _, f := range res.Files {
		fj := fileJSON{Name: f.Name, SHA256: f.SHA256, Kind: string(f.Kind), Status: string(f.Status), Counts: f.Counts,
			Errors: f.Issues.Errors, Warnings: f.Issues.Warnings, Issues: f.Issues.List()}
		if fj.Issues == nil {
			fj.Issues = []pipeline.Issue{}
		}
		var rej *pipeline.Rejection
		if errors.As(f.Err, &rej) {
			fj.Error = rej.Message
		} else if f.Err != nil {
			fj.Error = oneLine(f.Err)
		}
		out.Files = append(out.Files, fj)
	}
	return out
}

func cmdRun(ctx context.Context, a *app, args []string) error {
	fs := flags("run")
	tenant := fs.String("tenant", "", "tenant ID")
	var files stringList
	fs.Var(&files, "file", "a local file to process (repeatable; default: pull the tenant's SFTP /incoming)")
	dry := fs.Bool("dry-run", false, "compute and print every action and issue, change nothing")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	allowMass := fs.Bool("allow-mass-deactivation", false, "apply a user file the mass-deactivation guard rejected")
	date := fs.String("date", "", "logical date YYYY-MM-DD (default: today in the tenant's time zone)")
	storeURL := fs.String("store", "", "pull from an external SFTP server, sftp://user@host:port[/root] (default: the embedded server's data dir)")
	storeKey := fs.String("store-key", "", "private key file for --store")
	knownHosts := fs.String("known-hosts", "", "known_hosts file that verifies --store's host key")
	hostKey := fs.String("host-key", "", "pinned SHA256:… fingerprint of --store's host key (instead of --known-hosts)")
	smtp := smtpFlags(fs)
	stableAfter := fs.Duration("stable-after", 5*time.Second, "on --store, a file without a .done marker is taken once its size and mtime held this long (rclone users know this as the settle time); markers skip the wait")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tenant == "" {
		return usagef("run: --tenant is required")
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected argument %q (files go with --file)", fs.Arg(0))
	}
	var logical time.Time
	if *date != "" {
		d, err := time.Parse(time.DateOnly, *date)
		if err != nil {
			return usagef("run: --date must be YYYY-MM-DD")
		}
		logical = d
	}
	if len(files) > 0 && *storeURL != "" {
		return usagef("run: --file and --store exclude each other")
	}
	var inputs []*pipeline.File
	for _, p := range files {
		st, err := os.Stat(p)
		if err != nil {
			return usagef("run: %v", err)
		}
		if st.IsDir() {
			return usagef("run: %s is a directory", p)
		}
		inputs = append(inputs, &pipeline.File{Name: filepath.Base(p), Source: p})
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	rn, err := a.runner(db)
	if err != nil {
		return err
	}
	rn.Notify = smtp.mailer(a)
	req := pipeline.Request{Tenant: *tenant, Trigger: pipeline.TriggerManual, LogicalDate: logical,
		Files: inputs, DryRun: *dry, AllowMassDeactivation: *allowMass, KeyPassphrase: []byte(os.Getenv("ROSTER_KEY_PASSPHRASE"))}
	if len(files) == 0 {
		// Pull the tenant's complete uploads from its SFTP store.
		if _, err := (pipeline.Tenants{DB: db}).Get(ctx, *tenant); err != nil {
			return err
		}
		st, closeStore, err := a.openStore(ctx, *tenant, *storeURL, *storeKey, *knownHosts, *hostKey, *stableAfter)
		if err != nil {
			return err
		}
		defer closeStore()
		list, err := st.List(ctx)
		if err != nil {
			return fmt.Errorf("list /incoming: %w", err)
		}
		for _, rf := range list {
			req.Files = append(req.Files, &pipeline.File{Name: rf.Name, Source: rf.Name, Remote: true, Size: rf.Size, ModTime: rf.ModTime})
		}
		req.Store = st
	}
	res, err := rn.Run(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(a.stdout, toJSON(res)); err != nil {
			return err
		}
	} else {
		printRun(a, res)
	}
	if res.Status == pipeline.RunFailed {
		return exitError{exitFailed}
	}
	return nil
}

// printRun is the human summary of a run.
func printRun(a *app, res *pipeline.Result) {
	what := "run"
	if res.DryRun {
		what = "dry run (nothing changed)"
	}
	fmt.Fprintf(a.stdout, "%s %d for %s: %s\n", what, res.RunID, res.Tenant, res.Status)
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FILE\tKIND\tSTATUS\tROWS\tCREATED\tUPDATED\tDEACTIVATED\tREACTIVATED\tSCHEDULED\tUNCHANGED\tERRORS\tWARNINGS")
	for _, f := range res.Files {
		c := f.Counts
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Name, f.Kind, f.Status, c.Rows, c.Created, c.Updated,
			c.Deactivated, c.Reactivated, c.Scheduled, c.Unchanged, f.Issues.Errors, f.Issues.Warnings)
	}
	w.Flush()
	for _, f := range res.Files {
		list := f.Issues.List()
		if len(list) == 0 {
			continue
		}
		fmt.Fprintf(a.stdout, "\n%s: %d issue(s)\n", f.Name, f.Issues.Total())
		for i, is := range list {
			if i == 20 {
				fmt.Fprintf(a.stdout, "  … %d more (roster runs show %d)\n", f.Issues.Total()-20, res.RunID)
				break
			}
			loc := "file"
			if is.Row > 0 {
				loc = fmt.Sprintf("row %d", is.Row)
			}
			if is.Column != "" {
				loc += ", " + is.Column
			}
			fmt.Fprintf(a.stdout, "  %-7s %-28s %s: %s\n", is.Severity, is.Code, loc, strings.TrimSpace(is.Message))
		}
	}
	if res.FailureClass == pipeline.ClassSystem {
		fmt.Fprintf(a.stdout, "\nthe run failed for a system reason (retryable): %s\n", oneLine(errors.New(res.Reason)))
	}
}
