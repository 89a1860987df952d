// Command roster keeps a company's user directory in sync with the files
// its HR system drops on SFTP. Run `roster help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver sqlx opens by name
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Exit statuses: 0 every file applied (row issues allowed), 1 a file
// rejected or the run failed, 2 usage or configuration error.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// usageError is a mistake in how roster was called (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries a non-zero status without another message (the
// command already printed its result, e.g. --json of a failed run).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

type command struct {
	name, args, help string
	run              func(ctx context.Context, a *app, args []string) error
}

func commands() []command {
	return []command{
		{"run", "--tenant ID [--file PATH …] [--dry-run] [--json]", "process files through the pipeline", cmdRun},
		{"backfill", "--tenant ID --from DATE [--to DATE] [--reprocess missing|failed|all] [--dry-run] [--json]", "replay the files staging kept for a range of logical dates", cmdBackfill},
		{"sweep", "--tenant ID [--date D] [--dry-run] [--json]", "carry out scheduled deactivations due on or before the date", cmdSweep},
		{"tenant", "add ID [options] | list [--json]", "manage tenants", cmdTenant},
		{"users", "--tenant ID [--format csv|json]", "print the tenant's users, deactivated ones included", cmdUsers},
		{"departments", "--tenant ID [--format csv|json]", "print the tenant's departments", cmdDepartments},
		{"runs", "list [--tenant ID] [--json] | show RUN_ID [--json]", "read the run ledger", cmdRuns},
		{"serve", "[--sftp-listen ADDR] [--poll-interval 1m]", "run the embedded SFTP server and poll every tenant's /incoming", cmdServe},
		{"poll", "[--tenant ID] [--workers N]", "one poll of every tenant's /incoming in the data dir (what serve does every interval)", cmdPoll},
		{"keys", "generate TENANT [--force]", "issue a tenant's PGP key pair and print the public key", cmdKeys},
		{"demo", "", "the demo: a tenant, fixture files uploaded over SFTP, one full run, a summary", cmdDemo},
		{"export", "--tenant ID [--date DATE | --from DATE [--to DATE]] [--out DIR] [--format parquet|csv] [--json]", "write the analytics tables (Parquet or CSV partitions) for a date or a range", cmdExport},
		{"migrate", "", "apply the database migrations", cmdMigrate},
		{"stages", "", "list the pipeline stages and their options (Markdown)", cmdStages},
	}
}

// app is what every command shares: the global flags and the database.
type app struct {
	dbURL    string
	dataDir  string
	pipeline string
	log      *slog.Logger
	stdout   io.Writer
	stderr   io.Writer
	db       *sqlx.DB
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("roster", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	// The URL's default is read after parsing, not given to the flag: the
	// usage text prints flag defaults, and the URL may hold a password.
	global.StringVar(&a.dbURL, "db", "", "PostgreSQL URL (default $DATABASE_URL)")
	global.StringVar(&a.dataDir, "data-dir", envOr("ROSTER_DATA_DIR", "./var"), "data directory: SSH host key, SFTP homes, staging")
	global.StringVar(&a.pipeline, "pipeline", "", "pipeline YAML (default: the embedded one)")
	logFormat := global.String("log-format", "text", "log format: text or json")
	logLevel := global.String("log-level", "warn", "log level: debug, info, warn, error")
	memLimit := global.Int64("memory-limit-mib", 1024, "soft limit of the Go heap in MiB (GOMEMLIMIT wins when set): the garbage collector works harder near it "+
		"instead of letting a 1M-row file grow the process to ~1.8 GiB; raise it for files far above a million rows, 0 turns it off")
	cpuProfile := global.String("cpu-profile", "", "write a Go CPU profile of the command to this file (go tool pprof reads it); for finding where a slow run spends its time")
	memProfile := global.String("mem-profile", "", "write a Go allocation profile of the command to this file when it ends (go tool pprof -sample_index=alloc_space reads it); "+
		"on a VM, fresh memory costs system time as well as the allocation, so this is where a run's sys time comes from")
	traceOut := global.String("trace", "", "write a Go execution trace of the command to this file (go tool trace reads it); for seeing which goroutines run when, where a run leaves a core idle or waits on the database")
	if err := global.Parse(args); err != nil {
		fmt.Fprintln(stderr, "roster:", err)
		printUsage(stderr, global)
		return exitUsage
	}
	if a.dbURL == "" {
		a.dbURL = os.Getenv("DATABASE_URL")
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		printUsage(stdout, global)
		if len(rest) == 0 {
			return exitUsage
		}
		return exitOK
	}
	a.log = newLogger(stderr, *logFormat, *logLevel)
	if os.Getenv("GOMEMLIMIT") == "" && *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit << 20)
	}
	for _, r := range []struct {
		path, what string
		start      func(io.Writer) error
		stop       func()
	}{
		{*cpuProfile, "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile},
		{*traceOut, "trace", trace.Start, trace.Stop},
	} {
		if r.path == "" {
			continue
		}
		stop, err := record(r.path, r.start, r.stop)
		if err != nil {
			fmt.Fprintf(stderr, "roster: %s: %v\n", r.what, err)
			return exitUsage
		}
		defer stop()
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			fmt.Fprintln(stderr, "roster: memory profile:", err)
			return exitUsage
		}
		defer func() {
			runtime.GC() // the profile holds what the last collection saw
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(stderr, "roster: memory profile:", err)
			}
			f.Close()
		}()
	}
	for _, c := range commands() {
		if c.name != rest[0] {
			continue
		}
		err := c.run(ctx, a, rest[1:])
		if a.db != nil {
			a.db.Close()
		}
		return exitCode(stderr, err)
	}
	fmt.Fprintf(stderr, "roster: unknown command %q\n", rest[0])
	printUsage(stderr, global)
	return exitUsage
}

func exitCode(stderr io.Writer, err error) int {
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp), errors.Is(err, pipeline.ErrUnknownTenant), errors.Is(err, pipeline.ErrBadSpec):
		fmt.Fprintln(stderr, "roster:", oneLine(err))
		return exitUsage
	}
	fmt.Fprintln(stderr, "roster:", oneLine(err))
	return exitFailed
}

// oneLine keeps errors to one sentence: never a stack on the terminal.
func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func printUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprintln(w, "usage: roster [global flags] COMMAND [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n  %-12s   %s\n", c.name, c.help, "", c.args)
	}
	fmt.Fprintln(w, "\nglobal flags (before the command):")
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelWarn
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// poolSize is the database connections a command may open: serve's two
// workers (three connections each at most), its elector, nightly job and
// status page fit with room to spare; poll grows it with --workers.
const poolSize = 16

// open connects to PostgreSQL and applies pending migrations.
func (a *app) open(ctx context.Context) (*sqlx.DB, error) {
	if a.db != nil {
		return a.db, nil
	}
	if a.dbURL == "" {
		return nil, usagef("no database: set DATABASE_URL or --db (make db starts a local one)")
	}
	db, err := pipeline.OpenDB(withDeadClientCheck(a.dbURL))
	if err != nil {
		return nil, usagef("database URL: %v", err)
	}
	db.SetMaxOpenConns(poolSize)
	// A command holds one connection for a while (the migrations' lock,
	// then a run's tenant lock) and queries on a second: that one is set
	// up beside the first instead of after it (each is a backend started
	// on the server, a few ms).
	go func() {
		if c, err := db.Conn(ctx); err == nil {
			c.Close()
		}
	}()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	if _, err := schemas.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	a.db = db
	return db, nil
}

// record starts a recording of the command (a CPU profile, an execution
// trace) into the file path and returns what stops it and closes the file.
func record(path string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { stop(); f.Close() }, nil
}

// withDeadClientCheck asks PostgreSQL (14+) to check every second whether
// the client of a running statement is still there. Without it, a process
// killed during a long server-side statement leaves its backend running to
// the statement's end, holding the transaction's row locks and uncommitted
// index entries that the next run would wait on: a dead process's claims
// must die with it. An operator's own setting in the URL wins.
func withDeadClientCheck(dbURL string) string {
	const param = "client_connection_check_interval"
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return dbURL // a key=value DSN, or unparseable: left as given
	}
	q := u.Query()
	if q.Get(param) == "" {
		q.Set(param, "1000")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// flags makes a subcommand flag set whose errors are usage errors.
func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	// Allow flags after positional arguments (roster runs show 12 --json).
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return usagef("%s: %v", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
