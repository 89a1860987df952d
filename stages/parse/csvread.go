package parse

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"strings"
	"unicode/utf8"
)

// csvReader reads CSV records as encoding/csv does with FieldsPerRecord
// -1 and ReuseRecord (same records, FieldPos, InputOffset and errors; with
// an error it returns no record, where encoding/csv may return part of
// one), but splits a line without any quote itself: most lines of an HR
// export. Any other record (a quote anywhere in its first line, a line
// longer than what is buffered, the last line without a line end) is read
// by encoding/csv, which reads from the same bufio.Reader, so the two take
// turns record by record. With a smaller buffer than 4096 bytes, or a
// separator that is not one ASCII byte, every record is encoding/csv's.
//
// encoding/csv copies each line twice before making the record's string
// and looks for a quote in each field; on the 1M-row benchmark file it was
// ~0.45 s of the reader goroutine's 0.63 s of CPU. Here a line is looked
// at in the buffer, copied once into the record's string, and split on
// the separator.
type csvReader struct {
	br    *bufio.Reader
	std   *csv.Reader
	comma byte // the separator, or 0: every record goes to std

	rec  []string // the last record's fields, reused
	cols []int    // when read here, the 1-based byte column of each field
	fast bool     // the last record was read here
	line int      // when read here, its line

	// Lines and bytes read here, which std does not count, and the lines
	// std had read as of its last record.
	fastLines int
	fastBytes int64
	stdLines  int
}

// newCSVReader reads from br, which must be at least 4096 bytes (what
// encoding/csv takes as its own buffer rather than wrapping it in another,
// which would read ahead of the lines read here).
func newCSVReader(br *bufio.Reader, comma rune) *csvReader {
	std := csv.NewReader(br)
	std.Comma = comma
	std.FieldsPerRecord = -1
	std.ReuseRecord = true
	r := &csvReader{br: br, std: std}
	if comma > 0 && comma < utf8.RuneSelf && comma != '"' && comma != '\r' && comma != '\n' && br.Size() >= 4096 {
		r.comma = byte(comma)
	}
	return r
}

// Read returns the next record, as encoding/csv's Read.
func (r *csvReader) Read() ([]string, error) {
	if r.comma != 0 {
		if rec, ok := r.readFast(); ok {
			return rec, nil
		}
	}
	rec, err := r.std.Read()
	r.fast = false
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			moved := *pe
			moved.StartLine += r.fastLines
			moved.Line += r.fastLines
			return nil, &moved
		}
		return nil, err
	}
	last, _ := r.std.FieldPos(len(rec) - 1)
	r.stdLines = last + strings.Count(rec[len(rec)-1], "\n")
	return rec, nil
}

// readFast reads the next record when its line is buffered whole (or can
// be) and has no quote: ok is false otherwise, the record left to std.
// Blank lines before it are read and skipped, as encoding/csv skips them.
func (r *csvReader) readFast() (rec []string, ok bool) {
	for {
		buf, _ := r.br.Peek(r.br.Buffered()) // never more than is buffered: no error
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) >= r.br.Size() {
				return nil, false // a line longer than the buffer
			}
			// Fill the buffer for more of the line. Past the end of the
			// text (std reads a last line without a line end, or returns
			// io.EOF) or at a read error (which the layers below return
			// again, to std), std reads on.
			if more, _ := r.br.Peek(len(buf) + 1); len(more) > len(buf) {
				continue
			}
			return nil, false
		}
		line := buf[:i]
		if bytes.IndexByte(line, '"') >= 0 {
			return nil, false
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		var s string
		if len(line) > 0 {
			s = string(line)
		}
		r.br.Discard(i + 1) //nolint:errcheck // peeked
		r.fastLines++
		r.fastBytes += int64(i + 1)
		if len(line) == 0 {
			continue // a blank line, which encoding/csv skips
		}
		r.rec, r.cols = r.rec[:0], r.cols[:0]
		for start := 0; ; {
			j := strings.IndexByte(s[start:], r.comma)
			if j < 0 {
				r.rec, r.cols = append(r.rec, s[start:]), append(r.cols, start+1)
				break
			}
			r.rec, r.cols = append(r.rec, s[start:start+j]), append(r.cols, start+1)
			start += j + 1
		}
		r.fast, r.line = true, r.stdLines+r.fastLines
		return r.rec, true
	}
}

// FieldPos returns the line and column where field i of the last record
// starts, as encoding/csv's FieldPos.
func (r *csvReader) FieldPos(i int) (line, column int) {
	if r.fast {
		return r.line, r.cols[i]
	}
	line, column = r.std.FieldPos(i)
	return line + r.fastLines, column
}

// InputOffset returns how many bytes of the text were read as records.
func (r *csvReader) InputOffset() int64 { return r.fastBytes + r.std.InputOffset() }
