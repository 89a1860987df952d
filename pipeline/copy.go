package pipeline

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// CopyLine is one row for COPY, built value by value in a reused buffer:
// what CopyRows sends instead of a database/sql Exec per row, whose
// argument conversions cost as much CPU as the server's own work on a
// million rows.
//
// The row is in PostgreSQL's binary COPY format on a connection from
// TxConn, in the text format on lib/pq's (see CopyRows). The methods are
// the same for both: each appends the next column's value.
type CopyLine struct {
	b    []byte
	cols int

	// Set by CopyRows: where End sends the row.
	ctx   context.Context
	table string
	want  int // values per row
	sent  int
	cp    copier // text: lib/pq's COPY statement

	// binary: the rows are gathered in b and handed to send in large
	// pieces; col holds the columns' names and types, start is where the
	// row being built begins in b, err the first value its column's type
	// cannot take.
	bin   bool
	col   []copyColumn
	start int
	err   error
	send  func([]byte) error

	twin bool // made by Twin: sends nothing
}

// binFlush is how much of the binary stream CopyLine gathers before it
// hands it on.
const binFlush = 256 << 10

func (l *CopyLine) sep() {
	if l.bin {
		if l.cols == 0 {
			l.start = len(l.b)
			l.b = append(l.b, 0, 0) // the field count, set by End
		}
		l.cols++
		return
	}
	if l.cols > 0 {
		l.b = append(l.b, '\t')
	}
	l.cols++
}

// binField starts a binary value of n bytes and returns the column's type.
func (l *CopyLine) binField(n int) uint32 {
	l.sep()
	l.b = binary.BigEndian.AppendUint32(l.b, uint32(n))
	return l.colType()
}

// colType is the type of the column the last value went to, or 0 past the
// last column (End reports the count).
func (l *CopyLine) colType() uint32 {
	if l.cols > len(l.col) {
		return 0
	}
	return l.col[l.cols-1].oid
}

// mistyped records that the value given for the current column is not one
// its type takes in the binary format (a mistake of the caller's, which
// the text format would only have caught on some values).
func (l *CopyLine) mistyped(what string) {
	if l.err == nil && l.cols <= len(l.col) {
		c := l.col[l.cols-1]
		l.err = fmt.Errorf("copy into %s: column %s (type oid %d) given %s", l.table, c.name, c.oid, what)
	}
}

// Text appends a text value, escaped as COPY reads it (backslash, tab,
// line feed and carriage return).
func (l *CopyLine) Text(s string) {
	if l.bin {
		switch l.binField(len(s)) {
		case oidText, oidVarchar, oidBpchar, oidJSON:
		case oidJSONB:
			// jsonb's binary form is a version byte, then the text.
			binary.BigEndian.PutUint32(l.b[len(l.b)-4:], uint32(len(s)+1))
			l.b = append(l.b, 1)
		default:
			l.mistyped("text")
		}
		l.b = append(l.b, s...)
		return
	}
	l.sep()
	// Most values need no escape: their bytes up to the first backslash
	// or control byte go in at once (a switch per byte was 0.23 s of a
	// million-user COPY's encoding).
	i := 0
	for i < len(s) && s[i] != '\\' && s[i] >= ' ' {
		i++
	}
	l.b = append(l.b, s[:i]...)
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			l.b = append(l.b, '\\', '\\')
		case '\t':
			l.b = append(l.b, '\\', 't')
		case '\n':
			l.b = append(l.b, '\\', 'n')
		case '\r':
			l.b = append(l.b, '\\', 'r')
		default:
			l.b = append(l.b, c)
		}
	}
}

// Null appends NULL.
func (l *CopyLine) Null() {
	if l.bin {
		l.binField(-1)
		return
	}
	l.sep()
	l.b = append(l.b, '\\', 'N')
}

// Int appends an integer.
func (l *CopyLine) Int(v int64) {
	if l.bin {
		l.binInt(v)
		return
	}
	l.sep()
	l.b = strconv.AppendInt(l.b, v, 10)
}

// Bool appends a boolean.
func (l *CopyLine) Bool(v bool) {
	if l.bin {
		if l.binField(1) != oidBool {
			l.mistyped("a boolean")
		}
		if v {
			l.b = append(l.b, 1)
		} else {
			l.b = append(l.b, 0)
		}
		return
	}
	l.sep()
	if v {
		l.b = append(l.b, 't')
	} else {
		l.b = append(l.b, 'f')
	}
}

// Date appends a date given as days since 1970-01-01 (Arrow's date32), as
// YYYY-MM-DD. Years 0-9999 are written here, from the day count (through
// time.Time a date was ~100 ns, a tenth of a million-user COPY's
// encoding); others, which no HR file has, through time.Time.
func (l *CopyLine) Date(days int32) {
	if l.bin {
		// PostgreSQL counts days from 2000-01-01, 10,957 days later.
		if l.binField(4) != oidDate {
			l.mistyped("a date")
		}
		l.b = binary.BigEndian.AppendUint32(l.b, uint32(int64(days)-10957))
		return
	}
	l.sep()
	y, m, d := civil(int64(days))
	if y < 0 || y > 9999 {
		l.b = time.Unix(int64(days)*86400, 0).UTC().AppendFormat(l.b, time.DateOnly)
		return
	}
	l.b = append(l.b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10))
}

// civil returns the proleptic Gregorian year, month and day of the day
// that is days after 1970-01-01 (Howard Hinnant's civil_from_days: eras
// of 400 years, years starting on March 1st so that the leap day is the
// last of its year).
func civil(days int64) (y, m, d int64) {
	z := days + 719468 // days since 0000-03-01
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era-- // floor division
	}
	doe := z - era*146097                                  // day of the era, 0-146096
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of the era, 0-399
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of the year from March 1st, 0-365
	mp := (5*doy + 2) / 153                                // month from March, 0-11
	d = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if mp >= 10 {
		m = mp - 9
	}
	y = yoe + era*400
	if m <= 2 {
		y++
	}
	return y, m, d
}

// OptBytea appends b as bytea in hex (\\x…, the backslash escaped for
// COPY), or NULL when ok is false.
func (l *CopyLine) OptBytea(b []byte, ok bool) {
	if !ok {
		l.Null()
		return
	}
	if l.bin {
		if l.binField(len(b)) != oidBytea {
			l.mistyped("bytes")
		}
		l.b = append(l.b, b...)
		return
	}
	l.sep()
	l.b = append(l.b, '\\', '\\', 'x')
	l.b = hex.AppendEncode(l.b, b)
}

// OptText appends s, or NULL when ok is false.
func (l *CopyLine) OptText(s string, ok bool) {
	if ok {
		l.Text(s)
	} else {
		l.Null()
	}
}

// OptInt appends v, or NULL when ok is false.
func (l *CopyLine) OptInt(v int64, ok bool) {
	if ok {
		l.Int(v)
	} else {
		l.Null()
	}
}

// OptDate appends the date, or NULL when ok is false.
func (l *CopyLine) OptDate(days int32, ok bool) {
	if ok {
		l.Date(days)
	} else {
		l.Null()
	}
}

// binInt appends v as the current column's integer type.
func (l *CopyLine) binInt(v int64) {
	l.sep()
	switch typ := l.colType(); {
	case typ == oidInt8:
		l.b = binary.BigEndian.AppendUint32(l.b, 8)
		l.b = binary.BigEndian.AppendUint64(l.b, uint64(v))
	case typ == oidInt4 && v == int64(int32(v)):
		l.b = binary.BigEndian.AppendUint32(l.b, 4)
		l.b = binary.BigEndian.AppendUint32(l.b, uint32(v))
	case typ == oidInt2 && v == int64(int16(v)):
		l.b = binary.BigEndian.AppendUint32(l.b, 2)
		l.b = binary.BigEndian.AppendUint16(l.b, uint16(v))
	default:
		l.b = binary.BigEndian.AppendUint32(l.b, 8)
		l.b = binary.BigEndian.AppendUint64(l.b, uint64(v))
		l.mistyped("the integer " + strconv.FormatInt(v, 10))
	}
}

// End sends the row built since the last End and starts the next one.
// Cancellation is checked every few thousand rows rather than handed to
// the driver, which watches a cancellable context with a goroutine per
// call.
func (l *CopyLine) End() error {
	if l.twin {
		return fmt.Errorf("copy into %s: a twin line (CopyLine.Twin) sends nothing", l.table)
	}
	if l.cols != l.want {
		return fmt.Errorf("copy into %s: row %d has %d values for %d columns", l.table, l.sent+1, l.cols, l.want)
	}
	if l.sent%4096 == 0 {
		if err := l.ctx.Err(); err != nil {
			return err
		}
	}
	if l.bin {
		if l.err != nil {
			return fmt.Errorf("row %d: %w", l.sent+1, l.err)
		}
		binary.BigEndian.PutUint16(l.b[l.start:], uint16(l.cols))
		l.sent++
		l.cols = 0
		if len(l.b) >= binFlush {
			if err := l.send(l.b); err != nil {
				return err
			}
			l.b = l.b[:0]
		}
		return nil
	}
	// The driver copies the line into its buffer at once, so it may alias
	// l.b.
	if _, err := l.cp.CopyData(context.Background(), unsafe.String(unsafe.SliceData(l.b), len(l.b))); err != nil {
		return fmt.Errorf("copy into %s: %w", l.table, err)
	}
	l.sent++
	l.b, l.cols = l.b[:0], 0
	return nil
}

// Row is the encoding of the row built since the last End, as End would
// send it (in the binary format without the field count), or nil before
// its first value. It is valid until the next value, End or Reset.
func (l *CopyLine) Row() []byte {
	switch {
	case l.cols == 0:
		return nil
	case l.bin:
		return l.b[l.start+2:]
	}
	return l.b
}

// Reset drops the row built since the last End.
func (l *CopyLine) Reset() {
	if l.bin {
		if l.cols > 0 {
			l.b = l.b[:l.start]
		}
	} else {
		l.b = l.b[:0]
	}
	l.cols, l.err = 0, nil
}

// Twin returns a line that encodes values exactly as l does (the same
// columns, the same format) and sends nothing: its rows are read with Row
// and dropped with Reset (End fails on it). It is how a caller checks a row
// against one l sent, while l may still be sending.
func (l *CopyLine) Twin() *CopyLine {
	return &CopyLine{b: make([]byte, 0, 512), table: l.table, want: l.want, bin: l.bin, col: l.col, twin: true}
}

// copier is the part of lib/pq's COPY statement CopyRows uses: it takes a
// row already in the text format.
type copier interface {
	CopyData(ctx context.Context, line string) (driver.Result, error)
}

// The column types the binary format is written for (pg_type's oids).
const (
	oidBool    = 16
	oidBytea   = 17
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidJSON    = 114
	oidBpchar  = 1042
	oidVarchar = 1043
	oidDate    = 1082
	oidJSONB   = 3802
)

type copyColumn struct {
	name string
	oid  uint32
}

// CopyRows COPYs rows into table's cols on conn, the connection of the
// open transaction they belong to (conn must not be used by anything else
// meanwhile: the driver connection is held for the whole COPY). write
// appends each row's values to line, one per column in order, and calls
// line.End after each row. It returns the number of rows sent.
//
// On a connection from TxConn (pgx) the rows go in PostgreSQL's binary
// format, which the server reads without parsing text: a million new
// users' COPY took 4.0-4.2 s of the server's time against 4.3-4.5 s as
// text (psql, alternating, same rows), and the server is what a first
// load waits for. On lib/pq's, which takes only text, they go to its
// CopyData as text lines.
func CopyRows(ctx context.Context, conn *sql.Conn, table string, cols []string, write func(line *CopyLine) error) (int, error) {
	write = recovered(table, write)
	var bin bool
	if err := conn.Raw(func(dc any) error { _, bin = dc.(*stdlib.Conn); return nil }); err != nil {
		return 0, fmt.Errorf("copy into %s: %w", table, err)
	}
	if bin {
		return copyBinary(ctx, conn, table, cols, write)
	}
	n := 0
	err := conn.Raw(func(dc any) error {
		prep, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return fmt.Errorf("copy into %s: the driver cannot prepare statements", table)
		}
		st, err := prep.PrepareContext(ctx, copySQL(table, cols))
		if err != nil {
			return fmt.Errorf("copy into %s: %w", table, err)
		}
		cp, ok := st.(copier)
		if !ok {
			st.Close()
			return fmt.Errorf("copy into %s: the driver's COPY statement takes no raw rows", table)
		}
		line := CopyLine{b: make([]byte, 0, 512), ctx: ctx, cp: cp, table: table, want: len(cols)}
		err = write(&line)
		n = line.sent
		if err == nil && line.cols > 0 {
			err = fmt.Errorf("copy into %s: the last row has no End", table)
		}
		if err != nil {
			st.Close()
			return err
		}
		//lint:ignore SA1019 lib/pq ends a COPY with Exec(nil), which has no context form
		if _, err := st.Exec(nil); err != nil { //nolint:staticcheck
			st.Close()
			return fmt.Errorf("copy into %s: %w", table, err)
		}
		if err := st.Close(); err != nil {
			return fmt.Errorf("copy into %s: %w", table, err)
		}
		return nil
	})
	return n, err
}

// recovered turns a panic in write into its error. write runs inside
// database/sql's Conn.Raw, which, unwinding a panic, waits for a lock it
// holds itself: the panic would hang the COPY, and the run with it, rather
// than fail the file (the runner's recover never got to run).
func recovered(table string, write func(*CopyLine) error) func(*CopyLine) error {
	return func(l *CopyLine) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("copy into %s: writing the rows panicked: %v\n%s", table, p, debug.Stack())
			}
		}()
		return write(l)
	}
}

// copyBinary is CopyRows on a pgx connection: the columns' types are read
// first (the binary format has one encoding per type), then pgconn's
// CopyFrom reads the stream write builds through a pipe, on a goroutine of
// its own, so that encoding the next rows overlaps with sending these.
func copyBinary(ctx context.Context, conn *sql.Conn, table string, cols []string, write func(line *CopyLine) error) (int, error) {
	types, err := columnTypes(ctx, conn, table)
	if err != nil {
		return 0, fmt.Errorf("copy into %s: %w", table, err)
	}
	line := CopyLine{b: make([]byte, 0, binFlush+64<<10), ctx: ctx, table: table, want: len(cols), bin: true}
	for _, c := range cols {
		oid, ok := types[c]
		if !ok {
			return 0, fmt.Errorf("copy into %s: no column %s", table, c)
		}
		line.col = append(line.col, copyColumn{c, oid})
	}
	err = conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn().PgConn()
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := pc.CopyFrom(ctx, pr, copySQL(table, cols)+" (FORMAT binary)")
			// A COPY the server ended early stops the writes still to come.
			pr.CloseWithError(cmp.Or(err, io.ErrClosedPipe))
			done <- err
		}()
		line.send = func(b []byte) error {
			_, err := pw.Write(b)
			return err
		}
		line.b = append(line.b, copySignature...)
		line.b = append(line.b, 0, 0, 0, 0, 0, 0, 0, 0) // flags, header extension length
		werr := write(&line)
		if werr == nil && line.cols > 0 {
			werr = fmt.Errorf("copy into %s: the last row has no End", table)
		}
		if werr == nil {
			werr = line.send(binary.BigEndian.AppendUint16(line.b, 0xffff)) // the trailer
		}
		// A failed write makes CopyFrom send CopyFail: the server ends
		// the COPY and the transaction must be rolled back. The write's
		// own error is the cause then (the server's only echoes it, as a
		// cancellation); a server error that stopped the writes is in
		// cerr, and werr only says the pipe was closed.
		pw.CloseWithError(werr)
		cerr := <-done
		fromPipe := errors.Is(werr, io.ErrClosedPipe) || (cerr != nil && errors.Is(werr, cerr))
		if werr != nil && !fromPipe {
			return werr
		}
		if cerr != nil {
			return fmt.Errorf("copy into %s: %w", table, cerr)
		}
		return werr
	})
	return line.sent, err
}

// columnTypes reads the type of each of table's columns.
func columnTypes(ctx context.Context, conn *sql.Conn, table string) (map[string]uint32, error) {
	rows, err := conn.QueryContext(ctx, `SELECT attname, atttypid::bigint FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, pq.QuoteIdentifier(table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types := map[string]uint32{}
	for rows.Next() {
		var name string
		var oid int64
		if err := rows.Scan(&name, &oid); err != nil {
			return nil, err
		}
		types[name] = uint32(oid)
	}
	return types, rows.Err()
}

// copySQL is the COPY … FROM STDIN statement for table's cols.
func copySQL(table string, cols []string) string {
	var b strings.Builder
	b.WriteString("COPY " + pq.QuoteIdentifier(table) + " (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pq.QuoteIdentifier(c))
	}
	b.WriteString(") FROM STDIN")
	return b.String()
}
