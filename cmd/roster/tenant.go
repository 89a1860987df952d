package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/sftpd"
	"golang.org/x/crypto/ssh"
)

var tenantIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func cmdTenant(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return usagef("tenant: say add or list")
	}
	switch args[0] {
	case "add":
		return tenantAdd(ctx, a, args[1:])
	case "list":
		return tenantList(ctx, a, args[1:])
	}
	return usagef("tenant: unknown subcommand %q (add, list)", args[0])
}

func tenantAdd(ctx context.Context, a *app, args []string) error {
	fs := flags("tenant add")
	seats := fs.Int("seats", -1, "licensed seats (default: unlimited)")
	dateFormat := fs.String("date-format", "MM/DD/YYYY", "locale date format: MM/DD/YYYY or DD/MM/YYYY")
	tz := fs.String("timezone", "America/New_York", "the tenant's time zone, for \"today\"")
	contact := fs.String("contact", "", "technical contact e-mail, who gets error reports")
	omitted := fs.String("omitted", "keep", "users missing from a user file: keep or deactivate")
	massPct := fs.Float64("mass-deactivation-pct", 20, "reject a user file that deactivates more than this % of active users (and more than 10)")
	delimiter := fs.String("delimiter", "comma", "comma, or auto to also accept Excel's ';' exports")
	requireEnc := fs.Bool("require-encryption", false, "reject plaintext uploads")
	maxBytes := fs.Int64("max-file-bytes", 1<<30, "largest accepted upload, encrypted or decrypted")
	custom := fs.String("custom-fields", "", "comma-separated names of extra user columns to keep")
	pwStdin := fs.Bool("sftp-password-stdin", false, "read the SFTP password from standard input")
	var keys stringList
	fs.Var(&keys, "sftp-public-key", "authorized_keys file of the customer's SFTP public key(s) (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("tenant add: give exactly one tenant ID")
	}
	id := fs.Arg(0)
	if !tenantIDRE.MatchString(id) {
		return usagef("tenant add: %q is not a valid tenant ID (lower-case letters, digits, - and _, at most 63)", id)
	}
	switch {
	case *dateFormat != "MM/DD/YYYY" && *dateFormat != "DD/MM/YYYY":
		return usagef("tenant add: --date-format must be MM/DD/YYYY or DD/MM/YYYY")
	case *omitted != "keep" && *omitted != "deactivate":
		return usagef("tenant add: --omitted must be keep or deactivate")
	case *delimiter != "comma" && *delimiter != "auto":
		return usagef("tenant add: --delimiter must be comma or auto")
	case *massPct < 0 || *massPct > 100:
		return usagef("tenant add: --mass-deactivation-pct must be between 0 and 100")
	case *maxBytes <= 0:
		return usagef("tenant add: --max-file-bytes must be positive")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	store := pipeline.Tenants{DB: db}
	t, err := store.Get(ctx, id)
	if err != nil {
		t = pipeline.NewTenant(id)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["seats"] || t.CreatedAt.IsZero() {
		t.Seats = sql.NullInt64{Int64: int64(*seats), Valid: *seats >= 0}
	}
	if set["date-format"] || t.CreatedAt.IsZero() {
		t.DateFormat = *dateFormat
	}
	if set["timezone"] || t.CreatedAt.IsZero() {
		t.Timezone = *tz
	}
	if set["contact"] {
		t.ContactEmail = *contact
	}
	if set["omitted"] {
		t.Omitted = *omitted
	}
	if set["mass-deactivation-pct"] {
		t.MassDeactivationPct = *massPct
	}
	if set["delimiter"] {
		t.Delimiter = *delimiter
	}
	if set["require-encryption"] {
		t.RequireEncryption = *requireEnc
	}
	if set["max-file-bytes"] {
		t.MaxFileBytes = *maxBytes
	}
	if set["custom-fields"] {
		t.CustomFields = nil
		for _, c := range strings.Split(*custom, ",") {
			if c = strings.TrimSpace(c); c != "" {
				t.CustomFields = append(t.CustomFields, c)
			}
		}
	}
	if *pwStdin {
		pw, err := readPassword(os.Stdin)
		if err != nil {
			return err
		}
		if t.SFTPPasswordHash, err = sftpd.HashPassword(pw); err != nil {
			return err
		}
	}
	for _, path := range keys {
		b, err := os.ReadFile(path)
		if err != nil {
			return usagef("tenant add: %v", err)
		}
		for rest := b; len(strings.TrimSpace(string(rest))) > 0; {
			pk, _, _, r, err := ssh.ParseAuthorizedKey(rest)
			if err != nil {
				return usagef("tenant add: %s: not an SSH public key: %v", path, err)
			}
			t.SFTPPublicKeys = append(t.SFTPPublicKeys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))))
			rest = r
		}
	}
	if err := store.Put(ctx, t); err != nil {
		return usagef("%v", err)
	}
	fmt.Fprintf(a.stdout, "tenant %s saved\n", id)
	return nil
}

func readPassword(r io.Reader) ([]byte, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read the password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if len(pw) < 8 {
		return nil, usagef("the SFTP password must have at least 8 characters")
	}
	return []byte(pw), nil
}

type tenantJSON struct {
	*pipeline.Tenant
	Seats          *int64 `json:"seats"`
	SFTPPassword   bool   `json:"sftp_password"`
	SFTPPublicKeys int    `json:"sftp_public_keys"`
}

func tenantList(ctx context.Context, a *app, args []string) error {
	fs := flags("tenant list")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	ts, err := pipeline.Tenants{DB: db}.List(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		out := []tenantJSON{}
		for _, t := range ts {
			tj := tenantJSON{Tenant: t, SFTPPassword: t.SFTPPasswordHash != "", SFTPPublicKeys: len(t.SFTPPublicKeys)}
			if t.Seats.Valid {
				tj.Seats = &t.Seats.Int64
			}
			out = append(out, tj)
		}
		return writeJSON(a.stdout, out)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tSEATS\tDATES\tTIMEZONE\tOMITTED\tCONTACT")
	for _, t := range ts {
		seats := "unlimited"
		if t.Seats.Valid {
			seats = fmt.Sprint(t.Seats.Int64)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, seats, t.DateFormat, t.Timezone, t.Omitted, t.ContactEmail)
	}
	return w.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
