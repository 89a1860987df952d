package sftpd

import (
	"errors"

	"github.com/pkg/sftp"
)

// ErrInvalidTenant is returned for a tenant ID that cannot safely name a home
// directory (empty, too long, or with characters other than ASCII letters,
// digits, '-', '_' and '.', or starting with '.' or '-').
var ErrInvalidTenant = errors.New("sftpd: invalid tenant id")

// clientError is an error sent to an SFTP client. code is one of pkg/sftp's
// status errors: the request server finds it with errors.As and sends it as
// the SSH_FX_* code, and msg becomes the status message clients display.
// Messages never carry on-disk paths: they would tell a tenant where homes
// live.
type clientError struct {
	code error
	msg  string
}

func (e *clientError) Error() string { return e.msg }
func (e *clientError) Unwrap() error { return e.code }

func denied(msg string) error  { return &clientError{sftp.ErrSSHFxPermissionDenied, msg} }
func failure(msg string) error { return &clientError{sftp.ErrSSHFxFailure, msg} }

// Errors returned to SFTP clients.
var (
	errNotExist  = &clientError{sftp.ErrSSHFxNoSuchFile, "no such file or directory"}
	errReadOnly  = denied("roster: permission denied: this folder is read-only; upload files to /incoming")
	errNoDirs    = denied("roster: permission denied: folders cannot be created or removed")
	errNoLinks   = denied("roster: permission denied: links are not supported")
	errBadName   = denied("roster: permission denied: file names must not start with '.' nor contain '/', '\\', control characters (bidirectional ones included) or invalid UTF-8")
	errNameLong  = denied("roster: permission denied: file name too long")
	errOutside   = denied("roster: permission denied: path leads outside your home")
	errSymlink   = denied("roster: permission denied: symbolic links are not followed")
	errHardLink  = denied("roster: permission denied: file has several links and is not served")
	errSpecial   = denied("roster: permission denied: not a regular file")
	errPerm      = denied("roster: permission denied")
	errExists    = failure("roster: file already exists")
	errIsDir     = failure("roster: is a directory")
	errNotDir    = failure("roster: not a directory")
	errInternal  = failure("roster: internal error")
	errTooLarge  = failure("roster: upload exceeds the maximum file size; the partial upload was discarded")
	errAborted   = failure("roster: upload aborted; the partial upload was discarded")
	errAuthLogin = errors.New("sftpd: authentication failed")
)
