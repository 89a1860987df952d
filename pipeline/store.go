package pipeline

import (
	"context"
	"io"
	"time"
)

// RemoteFile is an upload waiting in a tenant's /incoming.
type RemoteFile struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Store is one tenant's SFTP home as the pipeline sees it: the embedded
// server's data dir, or an external SFTP server.
type Store interface {
	// List returns the complete uploads in /incoming, in upload order
	// (mtime, then name). Files still being written and done markers are
	// not listed.
	List(ctx context.Context) ([]RemoteFile, error)
	// Fetch copies /incoming/name to w and returns the bytes written. A
	// failure leaves the remote file untouched.
	Fetch(ctx context.Context, name string, w io.Writer) (int64, error)
	// Finish moves /incoming/name, with its done marker if any, to
	// /processed (ok) or /failed, replacing a file of the same name there.
	Finish(ctx context.Context, name string, ok bool) error
	// PutReport writes /reports/name atomically (readers never see half).
	PutReport(ctx context.Context, name string, body []byte) error
}
