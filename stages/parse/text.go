package parse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// errEncoding is an invalid_encoding finding: the file is not text roster
// can read reliably.
type errEncoding struct {
	line int
	what string
}

func (e *errEncoding) Error() string {
	return fmt.Sprintf("line %d %s; save the file as \"CSV UTF-8\" (Excel: File → Save As → CSV UTF-8)", e.line, e.what)
}

// openText returns a reader of the file's text as UTF-8 with LF or CRLF line
// ends: a UTF-8 BOM is dropped, UTF-16 with a BOM (Excel's "Unicode Text") is
// converted, lone CRs (old Mac line ends) become LF, and invalid UTF-8 or a
// NUL byte ends the stream with an *errEncoding.
func openText(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	head, _ := br.Peek(3)
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte{0xEF, 0xBB, 0xBF}):
		br.Discard(3) //nolint:errcheck // peeked
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}), bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		// The BOM picks the byte order and is removed.
		dec := unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM).NewDecoder()
		src = transform.NewReader(br, dec)
	}
	return &textReader{src: src, line: 1}, nil
}

// textReader validates UTF-8, refuses NUL and turns lone CR into LF.
type textReader struct {
	src   io.Reader
	raw   []byte // read buffer, reused
	buf   []byte // bytes read from src, not yet returned
	carry []byte // an incomplete UTF-8 sequence at the end of the last read
	line  int
	cr    bool // the last byte returned was a lone-or-not CR, pending decision
	err   error
	eof   bool
}

func (t *textReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if len(t.buf) == 0 {
		if t.eof {
			if len(t.carry) > 0 {
				t.err = &errEncoding{line: t.line, what: "ends in the middle of a character (invalid UTF-8)"}
				return 0, t.err
			}
			return 0, io.EOF
		}
		if t.raw == nil {
			t.raw = make([]byte, 64<<10)
		}
		// t.buf is empty, so the buffer can be reused.
		chunk := t.raw[:cap(t.raw)]
		copy(chunk, t.carry)
		n, err := t.src.Read(chunk[len(t.carry):])
		chunk = chunk[:len(t.carry)+n]
		t.carry = nil
		if err == io.EOF {
			t.eof = true
		} else if err != nil {
			var te *errEncoding
			if errors.As(err, &te) {
				t.err = err
			} else {
				t.err = fmt.Errorf("read file: %w", err)
			}
			return 0, t.err
		}
		// Keep back a trailing partial rune for the next read.
		if !t.eof {
			cut := len(chunk)
			for i := len(chunk) - 1; i >= 0 && i >= len(chunk)-3; i-- {
				if utf8.RuneStart(chunk[i]) {
					if !utf8.FullRune(chunk[i:]) {
						cut = i
					}
					break
				}
			}
			t.carry = append(t.carry[:0:0], chunk[cut:]...)
			chunk = chunk[:cut]
		}
		if err := t.check(chunk); err != nil {
			t.err = err
			return 0, err
		}
		t.buf = chunk
		if len(t.buf) == 0 {
			return 0, nil
		}
	}
	// Runs without a CR are copied whole and their LFs counted with the
	// vectorised bytes functions: a byte at a time, this loop was a third
	// of the parse of a large file.
	n := 0
	for n < len(p) && len(t.buf) > 0 {
		if t.cr {
			t.cr = false
			if t.buf[0] == '\n' {
				// CRLF: the CR was already sent as LF; drop this LF.
				t.buf = t.buf[1:]
				continue
			}
		}
		if t.buf[0] == '\r' {
			t.buf = t.buf[1:]
			t.cr = true
			t.line++
			p[n] = '\n'
			n++
			continue
		}
		run := t.buf
		if i := bytes.IndexByte(run, '\r'); i >= 0 {
			run = run[:i]
		}
		k := copy(p[n:], run)
		t.line += bytes.Count(run[:k], newline)
		t.buf = t.buf[k:]
		n += k
	}
	return n, nil
}

var newline = []byte{'\n'}

// check validates a chunk of complete runes.
func (t *textReader) check(b []byte) error {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return nil // the common case, without a loop in Go over every byte
	}
	line := t.line
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return &errEncoding{line: line, what: "contains a NUL byte (is it UTF-16 without a byte-order mark, or not a text file?)"}
			}
			if c == '\n' || (c == '\r' && (i+1 >= len(b) || b[i+1] != '\n')) {
				line++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return &errEncoding{line: line, what: "is not valid UTF-8"}
		}
		i += size
	}
	return nil
}

// errRecordTooLong stops reading a record longer than the stage's
// max_record_bytes: a single 200 MB line must not be buffered whole (and
// copied again into fields and strings) by encoding/csv or encoding/json.
type errRecordTooLong struct{ limit int64 }

func (e *errRecordTooLong) Error() string {
	return fmt.Sprintf("a record is longer than %d bytes", e.limit)
}

// recordLimiter sits between the text and the buffered reader a CSV or
// JSON decoder reads from. The parser marks where each record ends (the
// decoder's input offset); the limiter fails once more than limit bytes,
// plus what the buffers above it may hold read ahead (slack), went by
// since that mark. Memory for one record is thus bounded by about
// limit+slack, whatever the file holds.
type recordLimiter struct {
	r     io.Reader
	limit int64
	slack int64
	pos   int64 // bytes passed to the reader above
	start int64 // where the current record begins, in the same bytes
	off   bool  // disarmed: reading on only to check the encoding
	err   error
}

// recordSlack covers the read-ahead of the buffers above the limiter: the
// parser's 1 MiB bufio.Reader and one refill of encoding/json's buffer.
const recordSlack = 2<<20 + 64<<10

func newRecordLimiter(r io.Reader, limit int64) *recordLimiter {
	return &recordLimiter{r: r, limit: limit, slack: recordSlack}
}

// mark records that everything before offset was consumed as whole records.
func (l *recordLimiter) mark(offset int64) { l.start = offset }

func (l *recordLimiter) Read(p []byte) (int, error) {
	if l.err != nil && !l.off {
		return 0, l.err
	}
	if !l.off && l.limit > 0 {
		room := l.start + l.limit + l.slack - l.pos
		if room <= 0 {
			l.err = &errRecordTooLong{limit: l.limit}
			return 0, l.err
		}
		if int64(len(p)) > room {
			p = p[:room]
		}
	}
	n, err := l.r.Read(p)
	l.pos += int64(n)
	return n, err
}
