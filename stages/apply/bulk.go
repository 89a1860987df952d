package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline"
)

// A large first load goes into a partition of the tenant's own (migration
// 0010): a table made in the file's transaction, with no index while the
// COPY fills it. Its keys are then built from the sorted rows, which costs
// PostgreSQL a fraction of growing them one insert at a time, and the table
// is attached as the tenant's partition of users just before the ledger
// entry and the commit. Until then nobody else can see it, and a rollback
// leaves nothing behind.
//
// Locks. The attach takes an ACCESS EXCLUSIVE lock on users_default, the
// other tenants' partition, until the commit: other tenants' reads and
// writes of users wait from the attach to the commit (users_default is
// scanned once, to prove it holds none of the tenant's rows, then come the
// ledger entry and the commit). While the attach waits for that lock, they
// queue behind it too, so it waits a second at a time and steps aside
// between tries; past bulk_attach_wait_ms the rows go into users_default
// instead (see attach). Two bulk loads could each hold a read lock on
// users_default and wait for the other's, so a bulk load first takes a
// SHARE UPDATE EXCLUSIVE lock on the partitioned table users alone (which
// no reader or writer of rows takes), before its transaction reads any
// user: bulk loads run one at a time, and neither deadlocks the other.

// partitionName is tenant's own users partition, unquoted: users_of_<tenant>,
// or, when that is longer than PostgreSQL's 63-byte names, users_of_, the
// id's first 45 bytes, '~' and a hash of the whole id (tenant ids never
// hold a '~', so the two forms cannot meet). users_default is no tenant's.
func partitionName(tenant string) string {
	name := "users_of_" + tenant
	if len(name) > 63 {
		sum := sha256.Sum256([]byte(tenant))
		name = name[:54] + "~" + hex.EncodeToString(sum[:4])
	}
	return name
}

// Why startBulk left a first load to users.
const (
	noBulkHasUsers  = "the tenant has users"
	noBulkPartition = "the tenant has a partition of its own"
	noBulkName      = "a relation already has the name of the tenant's partition"
	noBulkRole      = "the database role may not create tables or attach them to users (it must be a member of users' owner and may create in the current schema)"
)

// startBulk prepares a bulk load of tenant's users on tx, whose statements
// so far must not have read users (see Locks above). It returns the table
// to COPY the new users into, or "" and why the users go into users as
// usual instead.
func startBulk(ctx context.Context, tx *sqlx.Tx, tenant string) (table, why string, err error) {
	// The catalog only, before the lock: a role that owns nothing here
	// would fail at CREATE or at the attach, and take the file down.
	var may bool
	if err := tx.GetContext(ctx, &may, `SELECT pg_has_role(c.relowner, 'USAGE') AND coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)
		FROM pg_class c WHERE c.oid = 'users'::regclass`); err != nil {
		return "", "", fmt.Errorf("apply: bulk load: check the role: %w", err)
	}
	if !may {
		return "", noBulkRole, nil
	}
	if _, err := tx.ExecContext(ctx, `LOCK TABLE ONLY users IN SHARE UPDATE EXCLUSIVE MODE`); err != nil {
		return "", "", fmt.Errorf("apply: bulk load: lock users: %w", err)
	}
	table = partitionName(tenant)
	// The tenant's partition by its bound, whatever its name; the name
	// taken by anything (a table, an index) would fail the CREATE.
	var has, own, taken bool
	if err := tx.QueryRowxContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1),
			EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
				WHERE i.inhparent = 'users'::regclass AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%L)', $1::text)),
			to_regclass($2) IS NOT NULL`,
		tenant, pq.QuoteIdentifier(table)).Scan(&has, &own, &taken); err != nil {
		return "", "", fmt.Errorf("apply: bulk load: look for users: %w", err)
	}
	switch {
	case has:
		return "", noBulkHasUsers, nil
	case own:
		return "", noBulkPartition, nil
	case taken:
		return "", noBulkName, nil
	}
	// The CHECK is checked row by row as the COPY writes (a comparison),
	// and spares the attach a scan of the table to prove the same.
	if _, err := tx.ExecContext(ctx, `CREATE TABLE `+pq.QuoteIdentifier(table)+` (LIKE users INCLUDING DEFAULTS, CHECK (tenant_id = `+
		pipeline.QuoteLiteral(tenant)+`))`); err != nil {
		return "", "", fmt.Errorf("apply: bulk load: create %s: %w", table, err)
	}
	return table, "", nil
}

// indexOnParent matches pg_get_indexdef of a partitioned index of users:
// "CREATE [UNIQUE] INDEX name ON ONLY [schema.]users USING …".
var indexOnParent = regexp.MustCompile(`^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ (USING .*)$`)

// finishBulk builds table's keys and attaches it as tenant's partition.
// The keys are users' partitioned indexes, read from the catalog so that a
// migration changing one needs nothing here, and the primary key on id
// that every partition has (a partitioned table cannot). The attach finds
// each index it needs already built.
func (a *applier) finishBulk(ctx context.Context, name string) error {
	tenant, table := a.run.Tenant.ID, pq.QuoteIdentifier(name)
	if err := a.exec(ctx, "bulk primary key", `ALTER TABLE `+table+` ADD PRIMARY KEY (id)`); err != nil {
		return err
	}
	var defs []struct {
		Index      string `db:"index"`
		Constraint string `db:"constraint"`
	}
	if err := a.tx.SelectContext(ctx, &defs, `SELECT pg_get_indexdef(i.indexrelid) AS index,
			coalesce(pg_get_constraintdef(c.oid), '') AS constraint
		FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
		WHERE i.indrelid = 'users'::regclass ORDER BY i.indexrelid`); err != nil {
		return fmt.Errorf("apply: bulk load: read users' indexes: %w", err)
	}
	for _, d := range defs {
		q := `ALTER TABLE ` + table + ` ADD ` + d.Constraint
		if d.Constraint == "" {
			m := indexOnParent.FindStringSubmatch(d.Index)
			if m == nil {
				return fmt.Errorf("apply: bulk load: an index of users reads %q, which this version cannot copy", d.Index)
			}
			q = `CREATE ` + m[1] + `INDEX ON ` + table + ` ` + m[2]
		}
		if err := a.exec(ctx, "bulk index", q); err != nil {
			return err
		}
	}
	return a.attach(ctx, name, `ALTER TABLE users ATTACH PARTITION `+table+` FOR VALUES IN (`+pipeline.QuoteLiteral(tenant)+`)`)
}

// attach runs the attach statement q for the table name without queueing
// for long: while it waits for its lock on users_default, every other
// tenant's read and write of users queues behind it. So each try waits a
// second at most (lock_timeout, on a savepoint), then steps aside for a
// second; past attachWait of trying, the rows go into users_default
// instead, by INSERT … SELECT, whose lock no reader's conflicts with: the
// file applies as without a bulk load, only slower.
func (a *applier) attach(ctx context.Context, name, q string) error {
	var prev string
	if err := a.tx.GetContext(ctx, &prev, `SELECT current_setting('lock_timeout')`); err != nil {
		return fmt.Errorf("apply: bulk load: read lock_timeout: %w", err)
	}
	deadline := time.Now().Add(a.attachWait)
	for {
		wait := max(10*time.Millisecond, min(time.Second, time.Until(deadline)))
		if _, err := a.tx.ExecContext(ctx, `SAVEPOINT bulk_attach`); err != nil {
			return fmt.Errorf("apply: bulk load: savepoint: %w", err)
		}
		if _, err := a.tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true)`, fmt.Sprint(wait.Milliseconds())); err != nil {
			return fmt.Errorf("apply: bulk load: set lock_timeout: %w", err)
		}
		err := a.exec(ctx, "bulk attach", q)
		if err == nil {
			// RELEASE keeps the setting: the rest of the transaction
			// waits for locks as it would have.
			if _, err := a.tx.ExecContext(ctx, `RELEASE SAVEPOINT bulk_attach`); err != nil {
				return fmt.Errorf("apply: bulk load: release savepoint: %w", err)
			}
			if _, err := a.tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true)`, prev); err != nil {
				return fmt.Errorf("apply: bulk load: restore lock_timeout: %w", err)
			}
			if a.run.Log != nil {
				a.run.Log.Debug("apply: bulk load attached", "file", a.f.Name, "partition", name)
			}
			return nil
		}
		if sqlState(err) != "55P03" { // lock_not_available
			return err
		}
		if _, err := a.tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT bulk_attach`); err != nil {
			return fmt.Errorf("apply: bulk load: roll back to savepoint: %w", err)
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apply: bulk load: %w", ctx.Err())
		case <-time.After(min(time.Second, time.Until(deadline))):
		}
	}
	if a.run.Log != nil {
		a.run.Log.Warn("apply: bulk load could not attach its table in time; its users go into users_default", "file", a.f.Name,
			"partition", name, "waited", a.attachWait.String())
	}
	if err := a.exec(ctx, "bulk rows into users_default", `INSERT INTO users SELECT * FROM `+pq.QuoteIdentifier(name)); err != nil {
		return err
	}
	return a.exec(ctx, "bulk drop", `DROP TABLE `+pq.QuoteIdentifier(name))
}

// sqlState is the SQLSTATE of a PostgreSQL error from either driver, or "".
func sqlState(err error) string {
	var pge *pgconn.PgError
	if errors.As(err, &pge) {
		return pge.Code
	}
	var pqe *pq.Error
	if errors.As(err, &pqe) {
		return string(pqe.Code)
	}
	return ""
}
