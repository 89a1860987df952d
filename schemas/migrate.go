package schemas

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the advisory-lock key that serialises migrations, so
// several replicas starting at once apply each migration exactly once.
const migrationLock = 7_061_1001

// Migrate applies, in file-name order, every embedded migration not yet
// recorded in schema_migrations, each in its own transaction. It returns the
// versions it applied.
func Migrate(ctx context.Context, db *sqlx.DB) ([]string, error) {
	return migrateTo(ctx, db, "")
}

// migrateTo is Migrate stopping after version last ("": the newest), for
// tests that load data as an older schema held it.
func migrateTo(ctx context.Context, db *sqlx.DB, last string) ([]string, error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return nil, fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock) //nolint:errcheck // the lock dies with the session anyway
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	var done []string
	if err := conn.SelectContext(ctx, &done, `SELECT version FROM schema_migrations`); err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	have := map[string]bool{}
	for _, v := range done {
		have[v] = true
	}
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrate: list migrations: %w", err)
	}
	sort.Strings(names)
	var applied []string
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		if last != "" && version > last {
			break
		}
		if have[version] {
			continue
		}
		body, err := migrationFS.ReadFile(name)
		if err != nil {
			return applied, fmt.Errorf("migrate %s: read: %w", version, err)
		}
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			return applied, fmt.Errorf("migrate %s: begin: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback() //nolint:errcheck
			return applied, fmt.Errorf("migrate %s: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version); err != nil {
			tx.Rollback() //nolint:errcheck
			return applied, fmt.Errorf("migrate %s: record: %w", version, err)
		}
		if err := tx.Commit(); err != nil {
			return applied, fmt.Errorf("migrate %s: commit: %w", version, err)
		}
		applied = append(applied, version)
	}
	return applied, nil
}
