package jobs

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"
)

// ErrNotLeader is the elector's answer on a replica that is not the leader.
var ErrNotLeader = errors.New("another replica is the leader")

// leaderLock is the advisory-lock key of scheduler leadership.
const leaderLock = 7_061_3001

// Elector makes one replica the leader that runs scheduled jobs, by holding
// a PostgreSQL session advisory lock on a dedicated connection. The lock
// dies with the connection, so when the leader dies another replica takes
// over at its next election. It implements gocron's Elector.
//
// gocron's per-job Locker does not guarantee a single execution across
// instances (go-co-op/gocron#841); leadership narrows who runs jobs, and the
// ledger's claims (tenant lock, upload claim, job_runs rows) remain the
// final word.
type Elector struct {
	DB *sqlx.DB

	mu   sync.Mutex
	conn *sqlx.Conn
}

// IsLeader returns nil when this replica holds (or just took) leadership.
func (e *Elector) IsLeader(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn != nil {
		if err := e.conn.PingContext(ctx); err == nil {
			return nil
		}
		e.conn.Close()
		e.conn = nil
	}
	conn, err := e.DB.Connx(ctx)
	if err != nil {
		return fmt.Errorf("elect: %w", err)
	}
	var ok bool
	if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLock).Scan(&ok); err != nil {
		conn.Close()
		return fmt.Errorf("elect: %w", err)
	}
	if !ok {
		conn.Close()
		return ErrNotLeader
	}
	e.conn = conn
	return nil
}

// Resign gives up leadership. The connection is discarded, not returned to
// the pool, so no pooled session keeps holding the lock.
func (e *Elector) Resign() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn != nil {
		// Unlock first: a closed socket frees the lock only once the server
		// notices, and a successor asking at once must find it free.
		e.conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, leaderLock) //nolint:errcheck // discarded below either way
		e.conn.Raw(func(any) error { return driver.ErrBadConn })                              //nolint:errcheck // the point is the error
		e.conn.Close()
		e.conn = nil
	}
}
