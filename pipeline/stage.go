package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/jmoiron/sqlx"
)

// Stage is one step of the pipeline, run once per file.
//
// Process reads what the stages before it left in f and writes its own
// output there; it never reaches into the SFTP store or the ledger by
// itself, only through what Run hands it. It returns the rows it took in and
// gave out. Returning an error that wraps a *Rejection rejects the file (the
// customer's to fix: nothing of it is applied, the report says why); any
// other error fails the file as a system failure, and the upload stays where
// it is to be taken again.
type Stage interface {
	Process(ctx context.Context, run *Run, f *File) (Stats, error)
}

// RunFinisher is implemented by a per-file stage with work that can only
// be done once every file of the run went through it (apply: a department
// is deactivated only if no active user is left in it at the end of the
// run). The runner calls FinishRun after the per-file stages and before the
// "always" ones (report), so reports include what it found.
type RunFinisher interface {
	FinishRun(ctx context.Context, run *Run, files []*File) error
}

// RunStage is a stage that runs once per run, after every file went through
// the per-file stages (for instance the analytics export).
type RunStage interface {
	Finish(ctx context.Context, run *Run, files []*File) (Stats, error)
}

// Stats is what a stage reports for the ledger.
type Stats struct {
	RowsIn, RowsOut int64
}

// Scope says when the runner calls a stage.
type Scope int

// Stage scopes.
const (
	// PerFile stages run for each file, in the run's apply order once an
	// Ordered stage is reached.
	PerFile Scope = iota
	// PerRun stages implement RunStage and run once after all files.
	PerRun
)

// Field declares one option of a stage: its constant name, default and help
// text. The same declarations validate a pipeline spec and produce the docs.
type Field struct {
	Name    string
	Default any
	Help    string
}

// Spec declares a stage for the registry.
type Spec struct {
	Name    string
	Summary string
	Scope   Scope
	// Ordered stages must see files in apply order (departments before
	// users, upload order within a kind); the stages before the first
	// Ordered one run file by file as the files come.
	Ordered bool
	// Always stages run even for a file that an earlier stage rejected or
	// found to be a duplicate (the report must still be written).
	Always bool
	Fields []Field
	// New builds the stage from its options, defaults filled in.
	New func(opts Options) (any, error)
}

// Defaults returns the stage's options as its fields declare them.
func (s Spec) Defaults() Options {
	opts := Options{}
	for _, f := range s.Fields {
		opts[f.Name] = f.Default
	}
	return opts
}

// Options are a stage's configured options, keyed by Field.Name.
type Options map[string]any

// Int returns an integer option.
func (o Options) Int(name string) int {
	switch v := o[name].(type) {
	case int:
		return v
	case int64:
		return int(v)
	case float64:
		return int(v)
	}
	return 0
}

// String returns a string option.
func (o Options) String(name string) string { s, _ := o[name].(string); return s }

// Bool returns a boolean option.
func (o Options) Bool(name string) bool { b, _ := o[name].(bool); return b }

// Registry maps stage names to their specs. It is built explicitly (see
// package stages), never by init side effects.
type Registry struct{ specs map[string]Spec }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{specs: map[string]Spec{}} }

// Register adds a stage spec; registering a name twice is a programming error.
func (r *Registry) Register(s Spec) {
	if _, dup := r.specs[s.Name]; dup {
		panic("pipeline: stage registered twice: " + s.Name)
	}
	r.specs[s.Name] = s
}

// Lookup returns the spec of a stage.
func (r *Registry) Lookup(name string) (Spec, error) {
	s, ok := r.specs[name]
	if !ok {
		return Spec{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownStage, name, strings.Join(r.Names(), ", "))
	}
	return s, nil
}

// Names lists the registered stages in alphabetical order.
func (r *Registry) Names() []string {
	var names []string
	for n := range r.specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Docs renders every stage's options as Markdown, from the same
// declarations that validate specs.
func (r *Registry) Docs() string {
	var b strings.Builder
	for _, n := range r.Names() {
		s := r.specs[n]
		fmt.Fprintf(&b, "### `%s`\n\n%s\n\n", s.Name, s.Summary)
		if len(s.Fields) == 0 {
			continue
		}
		b.WriteString("| option | default | help |\n|---|---|---|\n")
		for _, f := range s.Fields {
			fmt.Fprintf(&b, "| `%s` | `%v` | %s |\n", f.Name, f.Default, f.Help)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Notifier reports a file's problems to the tenant's technical contact.
// FileReport's error is for logging only: a failed notice never fails a run.
type Notifier interface {
	FileReport(ctx context.Context, t *Tenant, f *File, runID int64) error
}

// Run is what every stage of one run may use.
type Run struct {
	ID          int64
	Tenant      *Tenant
	Trigger     string
	LogicalDate time.Time // the run's "today", midnight UTC
	DryRun      bool
	// AllowMassDeactivation lets an operator apply a file that the mass
	// deactivation guard would reject.
	AllowMassDeactivation bool
	DB                    *sqlx.DB
	Ledger                Ledger
	Store                 Store // the tenant's SFTP store; nil for local files
	StagingDir            string
	// KeyPassphrase unlocks tenants' stored PGP private keys
	// (ROSTER_KEY_PASSPHRASE). Never logged.
	KeyPassphrase []byte
	Mem           memory.Allocator
	Log           *slog.Logger
	// Notify tells the tenant's technical contact about a file with
	// problems (the report stage calls it); nil sends nothing.
	Notify Notifier
	// BeforeUsers, when set, runs inside a user file's apply transaction
	// between departments and users. Tests inject failures with it.
	BeforeUsers func(ctx context.Context, tx *sqlx.Tx) error
}

// Prefetcher is implemented by an Ordered stage that reads the tenant's
// directory before it can decide anything (diff reads the current users).
// In a run of one file nothing is applied before that file reaches the
// stage, so the runner calls Prefetch as the run starts and the read
// overlaps fetch, decrypt, parse and validate on the other core; the stage
// collects the result with File.Prefetched. In a run of several files the
// directory depends on the files applied before, and the stage reads it
// itself when its turn comes.
//
// Prefetch must only read, and must return promptly once ctx is cancelled:
// the runner cancels it when the file ends before the stage.
type Prefetcher interface {
	Prefetch(ctx context.Context, run *Run) (any, error)
}

// Speculator is implemented by an Ordered stage that can start on a file
// while the stage before it is still deciding about it: apply starts a
// first load's COPY beside diff (the server's COPY is most of a first
// load, and otherwise waits for every stage before it). In a run of one
// file, just before the stage ahead of it runs, the runner calls Speculate;
// the stage's Process collects the handle with File.Speculated.
//
// Speculate must return promptly, and it must take from f then whatever it
// reads later that the stage ahead still writes (Rejected, Skip, Issues),
// because both then work on f at once. It returns nil when f is not worth
// it. The work it starts may only be kept once Process has checked it
// against what the stages before decided. Close stops the work, undoes it
// and waits for it: the runner closes a handle nobody collected, and a
// stage that collects one closes it when done with it.
type Speculator interface {
	Speculate(ctx context.Context, run *Run, f *File) io.Closer
}
