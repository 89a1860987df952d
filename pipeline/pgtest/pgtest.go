// Package pgtest gives each test its own fresh, migrated PostgreSQL
// database on the server DATABASE_URL points at (make test starts a local
// one), and drops it afterwards. Tests talk to a real server over a real
// connection; nothing is mocked.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"slices"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the driver sqlx opens by name
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// URL returns the admin URL from DATABASE_URL, failing the test (in CI) or
// skipping it (locally) when there is none.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("DATABASE_URL is not set: run the tests with make test")
		}
		t.Skip("DATABASE_URL is not set: run the tests with make test")
	}
	return u
}

// New creates a fresh database, applies the migrations, and returns a
// connection pool to it and its URL. Both go away when the test ends.
func New(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	db, u := Empty(t)
	if _, err := schemas.Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db, u
}

// Empty is New without the migrations, for tests of the migrations.
func Empty(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	admin := URL(t)
	ctx := context.Background()
	adb, err := sqlx.Open("postgres", admin)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	name := "roster_test_" + hex.EncodeToString(b)
	if _, err := adb.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		adb.Close()
		t.Fatalf("create test database: %v", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db, err := pipeline.OpenDB(u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		adb.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck // best effort
		adb.Close()
	})
	return db, u.String()
}

// CheckHistoryFields fails t unless names (in any order) are the user
// fields the schema's roster_user_fields knows: the fields history records
// and replays, which apply and the export each list too, and which must
// agree or a field is lost from the replay. who says whose list it is.
func CheckHistoryFields(t testing.TB, db *sqlx.DB, who string, names []string) {
	t.Helper()
	var schema []string
	if err := db.SelectContext(context.Background(), &schema,
		`SELECT k FROM jsonb_object_keys(roster_user_fields(NULL::users, NULL)) k ORDER BY k`); err != nil {
		t.Fatal(err)
	}
	ours := slices.Sorted(slices.Values(names))
	if !slices.Equal(ours, schema) {
		t.Fatalf("%s lists %v, roster_user_fields has %v", who, ours, schema)
	}
}

// Role creates a login role on the server of the test database dbURL (the
// URL New or Empty returned), with no rights on anything, and returns its
// name and the URL that connects to that database as it (the server trusts
// local connections, as scripts/pg.sh sets it up). Roles belong to the
// whole server, so the name is the database's; the role and everything
// granted to it go when the test ends, before the database does.
func Role(t testing.TB, db *sqlx.DB, dbURL string) (name, roleURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name = "app_" + u.Path[1:]
	if _, err := db.Exec(`CREATE ROLE ` + name + ` LOGIN`); err != nil {
		t.Fatalf("create role: %v", err)
	}
	t.Cleanup(func() { db.Exec(`DROP OWNED BY ` + name + `; DROP ROLE ` + name) }) //nolint:errcheck // best effort
	u.User = url.User(name)
	return name, u.String()
}
