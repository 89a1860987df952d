package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"

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
// writes of users wait for that moment (the attach, then the ledger entry
// and the commit; users_default is scanned once to prove it holds none of
// the tenant's rows). To get it, the attach waits for the transactions
// already using users_default. Two bulk loads could each hold a read lock
// on users_default and wait for the other's, so a bulk load first takes a
// SHARE UPDATE EXCLUSIVE lock on the partitioned table users alone (which
// no reader or writer of rows takes), before its transaction reads any
// user: bulk loads run one at a time, and neither deadlocks the other.

// partitionName is tenant's own users partition, unquoted: users_of_<tenant>,
// or, for an id too long for PostgreSQL's 63-byte names, its first 45
// bytes, '~' and a hash of the whole (tenant ids never hold a '~', so the
// two forms cannot meet). users_default is no tenant's.
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
	if err := tx.GetContext(ctx, &may, `SELECT pg_has_role(c.relowner, 'USAGE') AND has_schema_privilege(current_schema(), 'CREATE')
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
	var has, own bool
	if err := tx.QueryRowxContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1), to_regclass($2) IS NOT NULL`,
		tenant, pq.QuoteIdentifier(table)).Scan(&has, &own); err != nil {
		return "", "", fmt.Errorf("apply: bulk load: look for users: %w", err)
	}
	switch {
	case has:
		return "", noBulkHasUsers, nil
	case own:
		return "", noBulkPartition, nil
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
func (a *applier) finishBulk(ctx context.Context, table string) error {
	tenant, table := a.run.Tenant.ID, pq.QuoteIdentifier(table)
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
	if err := a.exec(ctx, "bulk attach", `ALTER TABLE users ATTACH PARTITION `+table+` FOR VALUES IN (`+pipeline.QuoteLiteral(tenant)+`)`); err != nil {
		return err
	}
	if a.run.Log != nil {
		a.run.Log.Debug("apply: bulk load attached", "file", a.f.Name, "partition", table)
	}
	return nil
}
