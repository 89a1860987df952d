package schemas_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/schemas"
)

// TestCreationMovesToTheUser upgrades a database as 0004 left it — a
// user_history "create" row per user, with every value the user was
// created with — and checks 0005 records each creation on the user and
// that the values it derives (roster_user_initial: each field's first
// change's old value, else the current one) are exactly the deleted rows'.
func TestCreationMovesToTheUser(t *testing.T) {
	db, _ := pgtest.Empty(t)
	ctx := context.Background()
	if _, err := schemas.MigrateTo(ctx, db, "0004_users_fast_writes"); err != nil {
		t.Fatal(err)
	}
	creates := map[int64]string{
		1: `{"employee_id":{"new":"E1"},"email":{"new":"ada@x.com"},"first_name":{"new":"Ada"},"last_name":{"new":"L"},
			"department":{"new":"Eng"},"title":{"new":"Boss"},"location":{"new":"NYC"},"start_date":{"new":"2020-01-01"},
			"custom":{"new":{"team":"a"}},"active":{"new":true}}`,
		2: `{"employee_id":{"new":"E2"},"email":{"new":"bob@x.com"},"first_name":{"new":"Bob"},"last_name":{"new":"M"},
			"manager_id":{"new":1},"title":{"new":""},"location":{"new":""},"custom":{"new":{}},"active":{"new":true}}`,
		3: `{"email":{"new":"cy@x.com"},"first_name":{"new":"Cy"},"last_name":{"new":"N"},"title":{"new":""},
			"location":{"new":""},"custom":{"new":{}},"active":{"new":true}}`,
	}
	for _, q := range []string{
		`INSERT INTO tenants (id) VALUES ('acme')`,
		`INSERT INTO runs (id, tenant_id, trigger, logical_date, status) VALUES
			(1, 'acme', 'manual', '2026-01-01', 'succeeded'), (2, 'acme', 'manual', '2026-01-05', 'succeeded')`,
		`INSERT INTO run_files (id, run_id, tenant_id, name, sha256, status) VALUES (7, 1, 'acme', 'users.csv', 'x', 'applied')`,
		`INSERT INTO departments (id, tenant_id, name, name_key) VALUES (1, 'acme', 'Eng', 'eng'), (2, 'acme', 'Sales', 'sales')`,
		// The users as the two runs left them.
		`INSERT INTO users (id, tenant_id, employee_id, email, first_name, last_name, manager_id, department_id, title, location,
			start_date, deactivation_date, custom, active) VALUES
			(1, 'acme', NULL, 'ada@x.com', 'Ada', 'L', NULL, 2, 'Chief', 'NYC', '2020-01-01', NULL, '{"team":"a"}', true),
			(2, 'acme', 'E2', 'bob@x.com', 'Bob', 'M', 1, NULL, '', '', NULL, '2026-01-04', '{}', false),
			(3, 'acme', NULL, 'cy@x.com', 'Cy', 'N', NULL, NULL, '', '', NULL, NULL, '{}', true)`,
		`INSERT INTO user_history (tenant_id, run_id, file_id, user_id, action, effective_date, changes) VALUES
			('acme', 1, 7, 1, 'create', '2026-01-01', '` + creates[1] + `'),
			('acme', 1, 7, 2, 'create', '2026-01-01', '` + creates[2] + `'),
			('acme', 2, NULL, 1, 'update', '2026-01-05',
				'{"employee_id":{"old":"E1"},"title":{"old":"Boss","new":"Chief"},"department":{"old":"Eng","new":"Sales"}}'),
			('acme', 2, NULL, 2, 'deactivate', '2026-01-04',
				'{"deactivation_date":{"new":"2026-01-04"},"active":{"old":true,"new":false}}'),
			('acme', 2, NULL, 3, 'create', '2026-01-05', '` + creates[3] + `')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	applied, err := schemas.Migrate(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[0] != "0005_creation_on_user" {
		t.Fatalf("applied %v, want 0005_creation_on_user first", applied)
	}

	var left []string
	if err := db.SelectContext(ctx, &left, `SELECT action FROM user_history ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != "update" || left[1] != "deactivate" {
		t.Fatalf("history left %v, want the update and the deactivation", left)
	}
	var created []struct {
		ID   int64  `db:"id"`
		Run  *int64 `db:"created_run_id"`
		File *int64 `db:"created_file_id"`
	}
	if err := db.SelectContext(ctx, &created, `SELECT id, created_run_id, created_file_id FROM users ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	wantRun, wantFile := []int64{1, 1, 2}, []int64{7, 7, 0}
	for i, c := range created {
		file := int64(0)
		if c.File != nil {
			file = *c.File
		}
		if c.Run == nil || *c.Run != wantRun[i] || file != wantFile[i] {
			t.Errorf("user %d: created by run %v file %v, want run %d file %d", c.ID, c.Run, c.File, wantRun[i], wantFile[i])
		}
	}
	for id, want := range creates {
		var same bool
		var got string
		if err := db.QueryRowxContext(ctx, `SELECT roster_user_initial($1) = $2::jsonb, roster_user_initial($1)::text`, id, want).Scan(&same, &got); err != nil {
			t.Fatal(err)
		}
		if !same {
			t.Errorf("user %d as created:\n got %s\nwant %s", id, got, want)
		}
	}
	// The view still lists creations, field by field, with the first values.
	var n int
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM user_field_history WHERE action = 'create'`); err != nil {
		t.Fatal(err)
	}
	if n != 10+9+7 {
		t.Errorf("user_field_history lists %d creation fields, want 26", n)
	}
	var title string
	if err := db.GetContext(ctx, &title, `SELECT new_value FROM user_field_history
		WHERE action = 'create' AND user_id = 1 AND field = 'title' AND id IS NULL AND run_id = 1 AND file_id = 7
		AND effective_date = '2026-01-01'`); err != nil {
		t.Fatal(err)
	}
	if title != "Boss" {
		t.Errorf("user 1 created with title %q, want Boss", title)
	}
}

// TestUsersPartitionedByTenant upgrades a directory as 0009 left it and
// checks 0010 turns users into a table partitioned by tenant without
// touching a row or building an index again: the old table is the default
// partition, its own indexes serve the partitioned ones, and the id
// sequence, the unique keys and the row-digest trigger work as before.
func TestUsersPartitionedByTenant(t *testing.T) {
	db, dbURL := pgtest.Empty(t)
	ctx := context.Background()
	if _, err := schemas.MigrateTo(ctx, db, "0009_users_email_first"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO tenants (id) VALUES ('acme'), ('globex')`,
		`INSERT INTO users (tenant_id, employee_id, email, row_digest)
			SELECT CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, 'E' || g, 'u' || g || '@x.com', '\x01'::bytea
			FROM generate_series(1, 100) g`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// A role that reads and writes users and reads the history view, as
	// an application role or a reporting one would.
	role, _ := pgtest.Role(t, db, dbURL)
	for _, q := range []string{
		`GRANT SELECT, INSERT, UPDATE ON users TO ` + role,
		`GRANT SELECT ON user_field_history TO ` + role + ` WITH GRANT OPTION`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var before []int64
	if err := db.SelectContext(ctx, &before, `SELECT indexrelid::bigint FROM pg_index WHERE indrelid = 'users'::regclass ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	applied, err := schemas.MigrateTo(ctx, db, "0010_users_by_tenant")
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[0] != "0010_users_by_tenant" {
		t.Fatalf("applied %v, want 0010_users_by_tenant first", applied)
	}
	var kind, bound string
	var n int
	if err := db.QueryRowxContext(ctx, `SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'users'::regclass),
		(SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'users_default'::regclass),
		(SELECT count(*) FROM users)`).Scan(&kind, &bound, &n); err != nil {
		t.Fatal(err)
	}
	if kind != "p" || bound != "DEFAULT" || n != 100 {
		t.Fatalf("users is of kind %q, users_default's bound %q, %d users; want p, DEFAULT, 100", kind, bound, n)
	}
	// The indexes users had are now users_default's, each attached to a
	// partitioned index of users, all but the primary key (a partitioned
	// table cannot have one on id).
	var after []int64
	if err := db.SelectContext(ctx, &after, `SELECT indexrelid::bigint FROM pg_index WHERE indrelid = 'users_default'::regclass ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	var attached int
	if err := db.GetContext(ctx, &attached, `SELECT count(*) FROM pg_inherits i JOIN pg_index pi ON pi.indexrelid = i.inhparent
		JOIN pg_index ci ON ci.indexrelid = i.inhrelid WHERE pi.indrelid = 'users'::regclass AND ci.indrelid = 'users_default'::regclass`); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) || attached != len(before)-1 {
		t.Errorf("users_default's indexes %v (%d attached), want users' old ones %v, all but the primary key attached", after, attached, before)
	}
	for _, c := range []struct {
		q       string
		wantErr string
	}{
		{`INSERT INTO users (tenant_id, email) VALUES ('acme', 'new@x.com')`, ""},
		{`INSERT INTO users (tenant_id, email) VALUES ('acme', 'u2@x.com')`, "users_default_active_email"},
		{`INSERT INTO users (tenant_id, employee_id, email) VALUES ('acme', 'E2', 'other@x.com')`, "users_default_employee_id_key"},
	} {
		_, err := db.ExecContext(ctx, c.q)
		if (c.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: %v, want %q", c.q, err, c.wantErr)
		}
	}
	// The grants follow users and the view to their new objects, and no
	// more than them.
	var grants []string
	if err := db.SelectContext(ctx, &grants, `SELECT c.relname || ' ' || a.privilege_type || CASE WHEN a.is_grantable THEN ' +grant' ELSE '' END
		FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid IN ('users'::regclass, 'user_field_history'::regclass)
		AND a.grantee = $1::regrole ORDER BY 1`, role); err != nil {
		t.Fatal(err)
	}
	if want := []string{"user_field_history SELECT +grant", "users INSERT", "users SELECT", "users UPDATE"}; !slices.Equal(grants, want) {
		t.Errorf("%s's grants after 0010: %q, want %q", role, grants, want)
	}
	var digest []byte
	if err := db.GetContext(ctx, &digest, `UPDATE users SET title = 'Boss' WHERE tenant_id = 'acme' AND employee_id = 'E2' RETURNING row_digest`); err != nil {
		t.Fatal(err)
	}
	if digest != nil {
		t.Errorf("a changed user kept its row digest %x: the trigger is gone", digest)
	}
}

// TestEmployeeIDKeyFirst: after 0011 the employee id key leads with the
// employee id on users and every partition, still refuses a tenant's
// duplicate (at the commit), and a tenant's scan of users_default goes
// through users_default_tenant, not the whole partition.
func TestEmployeeIDKeyFirst(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tenants (id) VALUES ('acme'), ('globex')`,
		`INSERT INTO users (tenant_id, employee_id, email)
			SELECT CASE WHEN g % 50 = 0 THEN 'acme' ELSE 'globex' END, 'E' || g, 'u' || g || '@x.com' FROM generate_series(1, 20000) g`,
		`ANALYZE users`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var defs []string
	if err := db.SelectContext(ctx, &defs, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid IN ('users'::regclass, 'users_default'::regclass) AND contype = 'u'`); err != nil {
		t.Fatal(err)
	}
	if len(defs) != 2 || defs[0] != defs[1] || defs[0] != "UNIQUE (employee_id, tenant_id) DEFERRABLE INITIALLY DEFERRED" {
		t.Errorf("the employee id keys of users and users_default: %q", defs)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO users (tenant_id, employee_id, email) VALUES ('acme', 'E50', 'other@x.com')`); err == nil ||
		!strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("a second E50 in acme: %v, want a duplicate key error", err)
	}
	var plan []string
	if err := db.SelectContext(ctx, &plan, `EXPLAIN SELECT id FROM users WHERE tenant_id = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(plan, "\n"); !strings.Contains(p, "users_default_tenant") {
		t.Errorf("a tenant's scan of users_default does not use users_default_tenant:\n%s", p)
	}
}
