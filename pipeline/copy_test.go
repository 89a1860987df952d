package pipeline_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

// ownConn is a connection of its own to a fresh database, as apply holds
// one for its transaction: lib/pq's (text COPY) or TxConn's (binary).
func ownConn(t *testing.T, binary bool) (*sqlx.DB, *sqlx.Conn) {
	t.Helper()
	db, _ := pgtest.New(t)
	connect := func(ctx context.Context, db *sqlx.DB) (*sqlx.Conn, error) { return db.Connx(ctx) }
	if binary {
		connect = pipeline.TxConn
	}
	c, err := connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return db, c
}

// bothFormats runs test on a lib/pq connection and on a TxConn one.
func bothFormats(t *testing.T, test func(t *testing.T, binary bool)) {
	for _, binary := range []bool{false, true} {
		t.Run(map[bool]string{false: "text", true: "binary"}[binary], func(t *testing.T) { test(t, binary) })
	}
}

// TestCopyRowsRoundTrip: every value CopyLine encodes comes back from
// PostgreSQL as it was sent, in both formats — text with the characters
// COPY's text format escapes, NULLs beside empty strings, integers,
// booleans and dates, jsonb, bytea — and the rows are part of the open
// transaction (gone after a rollback).
func TestCopyRowsRoundTrip(t *testing.T) { bothFormats(t, testCopyRowsRoundTrip) }

func testCopyRowsRoundTrip(t *testing.T, binary bool) {
	db, conn := ownConn(t, binary)
	ctx := context.Background()
	texts := []string{"", "plain", `back\slash`, "tab\there", "line\nfeed", "carriage\rreturn", `\N`, `\.`, "end\\", "Zoë 東京 🙂", "'=1+2", `{"a": "b\"c"}`}
	type row struct {
		id    int64
		txt   sql.NullString
		ok    bool
		day   sql.NullString
		more  int64
		small int64
		doc   sql.NullString
		raw   []byte
	}
	var want []row
	for i, s := range texts {
		want = append(want, row{id: int64(i) - 3, txt: sql.NullString{String: s, Valid: true}, ok: i%2 == 0,
			day: sql.NullString{String: time.Unix(int64(i*4000-9000)*86400, 0).UTC().Format(time.DateOnly), Valid: true}, more: 1 << 40,
			small: int64(i) - 1<<31 + 5, doc: sql.NullString{String: fmt.Sprintf(`{"k": %q}`, s), Valid: true}, raw: []byte(s + "\x00\xff")})
	}
	want = append(want, row{id: 99, small: 1<<31 - 1}) // NULL text, date, jsonb and bytea
	for _, commit := range []bool{false, true} {
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck // ends the transaction if the test fails in it; after Commit a no-op
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS copied (id bigint, txt text, ok boolean, day date, more bigint,
			small integer, doc jsonb, raw bytea)`); err != nil {
			t.Fatal(err)
		}
		n, err := pipeline.CopyRows(ctx, conn.Conn, "copied", []string{"id", "txt", "ok", "day", "more", "small", "doc", "raw"}, func(l *pipeline.CopyLine) error {
			for _, w := range want {
				l.Int(w.id)
				l.OptText(w.txt.String, w.txt.Valid)
				l.Bool(w.ok)
				d, _ := time.Parse(time.DateOnly, w.day.String)
				l.OptDate(int32(d.Unix()/86400), w.day.Valid)
				l.Int(w.more)
				l.Int(w.small)
				l.OptText(w.doc.String, w.doc.Valid)
				l.OptBytea(w.raw, w.raw != nil)
				if err := l.End(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || n != len(want) {
			t.Fatalf("CopyRows: %d rows, %v", n, err)
		}
		if !commit {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			var exists bool
			if err := db.GetContext(ctx, &exists, `SELECT to_regclass('copied') IS NOT NULL`); err != nil || exists {
				t.Fatalf("after the rollback the table exists: %v %v", exists, err)
			}
			continue
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT id, txt, ok, to_char(day, 'YYYY-MM-DD'), more, small, doc::text, raw FROM copied ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []row
	for rows.Next() {
		var r row
		var more sql.NullInt64
		if err := rows.Scan(&r.id, &r.txt, &r.ok, &r.day, &more, &r.small, &r.doc, &r.raw); err != nil {
			t.Fatal(err)
		}
		r.more = more.Int64
		got = append(got, r)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows back, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestCopyRowsErrors, in both formats: a row with fewer values than
// columns is a mistake of the caller, reported rather than sent, and so is
// a value its column cannot take (text for an integer: named by the binary
// encoder, refused by the server in text); an error of write's own ends
// the COPY with that error; a row the server refuses fails the COPY with
// PostgreSQL's error, and the connection is usable again once the
// transaction is rolled back.
func TestCopyRowsErrors(t *testing.T) { bothFormats(t, testCopyRowsErrors) }

var errPlanRanOut = errors.New("the plan ran out")

// manyRows writes 50,000 rows of two integers: enough for the binary
// stream to have gone to the server in pieces before what follows.
func manyRows(l *pipeline.CopyLine) error {
	for k := 1; k <= 50000; k++ {
		l.Int(int64(k))
		l.Int(int64(k))
		if err := l.End(); err != nil {
			return err
		}
	}
	return nil
}

func testCopyRowsErrors(t *testing.T, binary bool) {
	_, conn := ownConn(t, binary)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		write func(l *pipeline.CopyLine) error
		want  string
	}{
		{"text for an integer", func(l *pipeline.CopyLine) error {
			l.Int(1)
			l.Text("two")
			return l.End()
		}, map[bool]string{false: "invalid input syntax for type integer", true: "column b (type oid 23) given text"}[binary]},
		{"an integer over the column's range", func(l *pipeline.CopyLine) error {
			l.Int(1)
			l.Int(1 << 40)
			return l.End()
		}, map[bool]string{false: "out of range", true: "column b (type oid 23) given the integer 1099511627776"}[binary]},
		{"write's own error after many rows", func(l *pipeline.CopyLine) error {
			if err := manyRows(l); err != nil {
				return err
			}
			return errPlanRanOut
		}, "the plan ran out"},
		// A bug in write fails the COPY: it used to hang it, database/sql's
		// Conn.Raw waiting on its own lock as the panic unwound.
		{"write panics after many rows", func(l *pipeline.CopyLine) error {
			if err := manyRows(l); err != nil {
				return err
			}
			var plan []int
			l.Int(int64(plan[3]))
			return nil
		}, "writing the rows panicked: runtime error: index out of range"},
	} {
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE two (a int, b int)`); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := pipeline.CopyRows(ctx, conn.Conn, "two", []string{"a", "b"}, c.write)
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: CopyRows has not returned after 20 s", c.name)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		// write's own error comes back as itself, not as the server's
		// echo of it (which PostgreSQL reports as a cancellation).
		if c.want == "the plan ran out" && !errors.Is(err, errPlanRanOut) {
			t.Errorf("%s: %v is not write's own error", c.name, err)
		}
		tx.Rollback() //nolint:errcheck
	}
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE two (a int, b int)`); err != nil {
		t.Fatal(err)
	}
	_, err = pipeline.CopyRows(ctx, conn.Conn, "two", []string{"a", "b"}, func(l *pipeline.CopyLine) error {
		l.Int(1)
		return l.End()
	})
	if err == nil {
		t.Fatal("a row of one value for two columns was accepted")
	}
	tx.Rollback() //nolint:errcheck

	tx, err = conn.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE strict (a int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	_, err = pipeline.CopyRows(ctx, conn.Conn, "strict", []string{"a"}, func(l *pipeline.CopyLine) error {
		for k := 1; k <= 20000; k++ {
			l.OptInt(int64(k), k != 10)
			if err := l.End(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "null value") {
		t.Fatalf("a NULL into a NOT NULL column: %v, want PostgreSQL's not-null error", err)
	}
	tx.Rollback() //nolint:errcheck
	var one int
	if err := conn.GetContext(ctx, &one, `SELECT 1`); err != nil || one != 1 {
		t.Fatalf("the connection after the failed COPY: %v", err)
	}
}

// TestCopyOutReadsTheQuery: CopyOut returns every row of its query, on a
// connection of its own, with NULL apart from empty text and the binary
// encodings of integers and booleans; a literal quoted with QuoteLiteral
// selects exactly its value, quotes and backslashes included.
func TestCopyOutReadsTheQuery(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	db.MustExec(`CREATE TABLE t (id bigint, name text, note text, ok boolean)`)
	db.MustExec(`INSERT INTO t VALUES (1, 'o''brien', NULL, true), (2, 'o''brien', '', false), (3, 'x\', 'n', true), (-4, 'o''brien', 'Zoë', true)`)
	type row struct {
		id   int64
		note string
		null bool
		ok   bool
	}
	var got []row
	n, err := pipeline.CopyOut(ctx, db, `SELECT id, note, ok FROM t WHERE name = `+pipeline.QuoteLiteral("o'brien")+` ORDER BY id`, func(f [][]byte) error {
		if len(f) != 3 || len(f[0]) != 8 || len(f[2]) != 1 {
			t.Fatalf("fields %q", f)
		}
		got = append(got, row{int64(binary.BigEndian.Uint64(f[0])), string(f[1]), f[1] == nil, f[2][0] == 1})
		return nil
	})
	want := []row{{-4, "Zoë", false, true}, {1, "", true, true}, {2, "", false, false}}
	if err != nil || n != 3 || !reflect.DeepEqual(got, want) {
		t.Fatalf("CopyOut: %d rows, err %v\n got %+v\nwant %+v", n, err, got, want)
	}
	if n, err := pipeline.CopyOut(ctx, db, `SELECT id FROM t WHERE name = `+pipeline.QuoteLiteral(`x\`), func([][]byte) error { return nil }); err != nil || n != 1 {
		t.Errorf("a literal ending in a backslash: %d rows, %v", n, err)
	}
	if _, err := pipeline.CopyOut(ctx, db, `SELECT nosuchcolumn FROM t`, func([][]byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "nosuchcolumn") {
		t.Errorf("a bad query: %v, want the server's error", err)
	}
	// A database opened any other way has no URL to connect with.
	_, u := pgtest.New(t)
	other, err := sqlx.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := pipeline.CopyOut(ctx, other, `SELECT 1`, func([][]byte) error { return nil }); !errors.Is(err, pipeline.ErrNoCopyPool) {
		t.Errorf("sqlx.Open'd database: %v, want ErrNoCopyPool", err)
	}
}

// TestCopyOutStopsOnCancel: a cancelled context stops CopyOut while the
// server is still working (diff's read ahead is cancelled when a run ends
// before diff, and must not outlive it by the length of the query).
func TestCopyOutStopsOnCancel(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	started := time.Now()
	_, err := pipeline.CopyOut(ctx, db, `SELECT pg_sleep(30)`, func([][]byte) error { return nil })
	if err == nil {
		t.Fatal("a cancelled CopyOut returned no error")
	}
	if took := time.Since(started); took > 15*time.Second {
		t.Errorf("CopyOut returned %v after its context was cancelled (the query sleeps 30 s): %v", took, err)
	}
	if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "cancel") {
		t.Errorf("err %v, want the cancellation", err)
	}
}

// TestTxConnClosesWithTheDB: TxConn's pool is closed with the database it
// was opened beside (a pool left open would keep connections to a
// database that tests drop and operators restart).
func TestTxConnClosesWithTheDB(t *testing.T) {
	_, url := pgtest.New(t)
	db, err := pipeline.OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := pipeline.TxConn(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := c.GetContext(ctx, &one, `SELECT 1`); err != nil || one != 1 {
		t.Fatalf("a TxConn query: %d, %v", one, err)
	}
	c.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.TxConn(ctx, db); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("TxConn after db.Close: %v, want the pool closed", err)
	}
}

// TestCopyOutAndTxConnShareAConnection: the connection that read a file's
// snapshot (CopyOut) goes back to the pool its apply takes one from
// (TxConn), so a file sets up one pgx connection, not one per use; and a
// CopyOut whose row function fails does not hand its connection, in the
// middle of a COPY, to the next user.
func TestCopyOutAndTxConnShareAConnection(t *testing.T) {
	_, url := pgtest.New(t)
	db, err := pipeline.OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var read string
	if _, err := pipeline.CopyOut(ctx, db, `SELECT pg_backend_pid()::text`, func(f [][]byte) error {
		read = string(f[0]) // text, in the binary format: its bytes
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	backend := func() string {
		t.Helper()
		c, err := pipeline.TxConn(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var pid string
		if err := c.GetContext(ctx, &pid, `SELECT pg_backend_pid()::text`); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	if got := backend(); got != read {
		t.Fatalf("apply's connection is backend %s, the snapshot's was %s: a connection set up twice", got, read)
	}
	stop := errors.New("stop")
	if _, err := pipeline.CopyOut(ctx, db, `SELECT g FROM generate_series(1, 100000) g`, func([][]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("CopyOut with a failing row: %v, want the row's error", err)
	}
	// The pool drops the connection the failed COPY left mid-stream: a
	// query on one handed out again would fail here.
	backend()
}
