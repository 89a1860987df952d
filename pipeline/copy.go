package pipeline

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
	"unsafe"
)

// CopyLine is one row in PostgreSQL's COPY text format, built value by
// value in a reused buffer: what CopyRows sends instead of a database/sql
// Exec per row, whose argument conversions cost as much CPU as the
// server's own work on a million rows.
type CopyLine struct {
	b    []byte
	cols int

	// Set by CopyRows: where End sends the row.
	ctx   context.Context
	cp    copier
	table string
	want  int // values per row
	sent  int
}

func (l *CopyLine) sep() {
	if l.cols > 0 {
		l.b = append(l.b, '\t')
	}
	l.cols++
}

// Text appends a text value, escaped as COPY reads it (backslash, tab,
// line feed and carriage return).
func (l *CopyLine) Text(s string) {
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
	l.sep()
	l.b = append(l.b, '\\', 'N')
}

// Int appends an integer.
func (l *CopyLine) Int(v int64) {
	l.sep()
	l.b = strconv.AppendInt(l.b, v, 10)
}

// Bool appends a boolean.
func (l *CopyLine) Bool(v bool) {
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

// End sends the row built since the last End and starts the next one.
// Cancellation is checked every few thousand rows rather than handed to
// the driver, which watches a cancellable context with a goroutine per
// call.
func (l *CopyLine) End() error {
	if l.cols != l.want {
		return fmt.Errorf("copy into %s: row %d has %d values for %d columns", l.table, l.sent+1, l.cols, l.want)
	}
	if l.sent%4096 == 0 {
		if err := l.ctx.Err(); err != nil {
			return err
		}
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

// copier is the part of lib/pq's COPY statement CopyRows uses: it takes a
// row already in the text format.
type copier interface {
	CopyData(ctx context.Context, line string) (driver.Result, error)
}

// CopyRows COPYs rows into table's cols on conn, the connection of the
// open transaction they belong to (conn must not be used by anything else
// meanwhile: the driver connection is held for the whole COPY). write
// appends each row's values to line, one per column in order, and calls
// line.End after each row. It returns the number of rows sent.
//
// The rows go to lib/pq's CopyData as text lines.
func CopyRows(ctx context.Context, conn *sql.Conn, table string, cols []string, write func(line *CopyLine) error) (int, error) {
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
