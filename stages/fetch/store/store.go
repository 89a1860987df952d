// Package store implements pipeline.Store, one tenant's SFTP home as the
// pipeline sees it:
//
//   - Local reads the embedded server's data directory (package sftpd)
//     directly on disk;
//   - DialSFTP connects to a customer's own SFTP server as a client.
//
// Both present the same tree: incoming/ (uploads), processed/ and failed/
// (where Finish moves them) and reports/ (written by PutReport).
//
// # Complete uploads and done markers
//
// A done marker for data file NAME is NAME.done, or STEM.done.pgp beside
// STEM.pgp (employees.csv.pgp + employees.csv.done.pgp). Markers are never
// listed as data, whether or not their data file exists, and Finish moves
// them with their file. Any file named *.done or *.done.pgp is therefore a
// marker. Dot-files, directories, symbolic links and other non-regular
// files in incoming/ are never listed either.
//
// On the embedded server every file visible in incoming/ is complete (the
// upload is renamed there when its handle closes), so Local lists every
// data file at once. On a foreign server a file is complete when it has a
// marker, or when its size and modification time were unchanged across two
// polls: see SFTP.List and SFTPConfig.StableAfter.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"unicode/utf8"
)

// Folders of a tenant home.
const (
	dirIncoming  = "incoming"
	dirProcessed = "processed"
	dirFailed    = "failed"
	dirReports   = "reports"
)

// reportPerm is the mode of a report written by PutReport.
const reportPerm fs.FileMode = 0o640

// markerSuffix and pgpMarkerSuffix end done-marker names.
const (
	markerSuffix    = ".done"
	pgpSuffix       = ".pgp"
	pgpMarkerSuffix = ".done.pgp"
)

// IsMarker reports whether name is a done marker (NAME.done or
// STEM.done.pgp), never listed or processed as data.
func IsMarker(name string) bool {
	return strings.HasSuffix(name, markerSuffix) || strings.HasSuffix(name, pgpMarkerSuffix)
}

// MarkerNames returns the names a done marker for data file name may have:
// name.done, and for STEM.pgp also STEM.done.pgp.
func MarkerNames(name string) []string {
	m := []string{name + markerSuffix}
	if stem, ok := strings.CutSuffix(name, pgpSuffix); ok && stem != "" {
		m = append(m, stem+pgpMarkerSuffix)
	}
	return m
}

// hidden reports whether a directory entry is never shown: dot-files,
// which include the temporary files PutReport writes.
func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// listable reports whether a name in incoming/ can go through a run: one
// the store would refuse to open, or that is not valid UTF-8 (the ledger
// cannot store it), is never listed, so it cannot fail every run of the
// tenant and block the files behind it. The embedded server never accepts
// such names; they come from a customer's own server or the host.
func listable(name string) bool {
	// Control characters are listed: those files are processed, and their
	// reports get cleaned names (report.Name).
	return checkName(name) == nil && utf8.ValidString(name)
}

// checkName refuses anything but a plain file name in a home folder.
func checkName(name string) error {
	switch {
	case name == "", hidden(name), strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("store: invalid file name %q: %w", name, fs.ErrInvalid)
	}
	return nil
}

func finishDir(ok bool) string {
	if ok {
		return dirProcessed
	}
	return dirFailed
}

// ctxWriter fails the copy once ctx is done. It wraps the destination, not
// the source, so an *sftp.File still drives the copy with its concurrent
// WriteTo.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// errClosed is returned by an SFTP store used after Close.
var errClosed = errors.New("store: sftp: connection closed by Close")
