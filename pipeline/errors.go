package pipeline

import (
	"errors"
	"fmt"
)

// Class says whose move a failure is.
type Class string

// Failure classes.
const (
	// ClassData: the customer must fix the file; retrying changes nothing.
	ClassData Class = "data"
	// ClassSystem: something on our side (database, network, disk); the
	// operator's problem, and retrying may succeed.
	ClassSystem Class = "system"
)

// Sentinel errors of the engine.
var (
	ErrUnknownStage  = errors.New("unknown stage")
	ErrUnknownTenant = errors.New("unknown tenant")
	ErrTenantBusy    = errors.New("another run of this tenant is in progress")
	ErrBadSpec       = errors.New("invalid pipeline spec")
	// ErrNoFiles: a run asked to discover its files found none, and was
	// not recorded.
	ErrNoFiles = errors.New("no files to process")
	// ErrSkipped: a stage had nothing to do in this run by its
	// configuration (the export with when: nightly, in a dry run, …). The
	// ledger records it as "skipped" with the reason; it is no failure,
	// and stage duration metrics leave it out.
	ErrSkipped = errors.New("skipped")
)

// Skip returns an ErrSkipped saying why.
func Skip(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSkipped, fmt.Sprintf(format, args...))
}

// Rejection rejects a whole file for a data reason, with a stable issue code.
type Rejection struct {
	Code    string
	Message string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Reject returns a *Rejection with a formatted message.
func Reject(code, format string, args ...any) error {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ClassOf classifies err: a *Rejection anywhere in its chain is the
// customer's data; anything else is a system failure.
func ClassOf(err error) Class {
	var r *Rejection
	if errors.As(err, &r) {
		return ClassData
	}
	return ClassSystem
}
