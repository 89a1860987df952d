package parse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/roster-hr/roster/schemas"
)

// readJSON reads an array of objects with the template's field names. Row N
// is the N-th object. A key missing from an object is an absent column for
// that row (null); null or "" is an empty cell.
func (b *builder) readJSON(ctx context.Context, path string) error {
	// Pass one: the keys of all objects make the header.
	var keys []string
	seen := map[string]bool{}
	rows := 0
	err := eachObject(ctx, path, func(_ int, obj map[string]json.RawMessage, bad string) {
		rows++
		for k := range obj {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}, b)
	if err != nil || b.found.first() != nil {
		return err
	}
	if rows == 0 {
		b.found.set(catEmpty, "the JSON array has no objects")
		return nil
	}
	// Object keys come in map order; sort for a stable column order.
	sortStrings(keys)
	fieldCol := b.header(keys)
	if fieldCol == nil {
		return nil
	}
	for _, w := range b.warned {
		w.Row = 0
		b.f.Issues.Add(w)
	}
	colOf := map[string]int{}
	for i, k := range keys {
		if fieldCol[i] >= 0 {
			colOf[k] = fieldCol[i]
		}
	}
	// Pass two: build.
	err = eachObject(ctx, path, func(row int, obj map[string]json.RawMessage, bad string) {
		b.startRow(row)
		if bad != "" {
			b.rejectRow(row, schemas.CodeMalformedRow, bad, "")
		}
		present := make([]bool, len(b.cols))
		vals := make([]string, len(b.cols))
		for k, raw := range obj {
			c, ok := colOf[k]
			if !ok {
				continue
			}
			v, msg := scalar(raw)
			if msg != "" && !b.f.Rejected.Has(b.rows) {
				b.rejectRow(row, schemas.CodeMalformedRow, fmt.Sprintf("%q %s", k, msg), "")
			}
			present[c], vals[c] = true, v
		}
		for c := range b.cols {
			b.cell(c, vals[c], present[c])
		}
		b.endRow()
	}, b)
	b.flush()
	return err
}

// eachObject streams the array's elements to fn with their 1-based row.
// A structural failure becomes a malformed_csv finding.
func eachObject(ctx context.Context, path string, fn func(row int, obj map[string]json.RawMessage, bad string), b *builder) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	defer in.Close()
	text, _ := openText(in)
	b.lim = newRecordLimiter(text, int64(b.maxRecord))
	br := bufio.NewReaderSize(b.lim, 1<<20)
	b.rest = br
	dec := json.NewDecoder(br)
	row, done := 0, 0 // objects begun, objects read whole
	fail := func(err error) error {
		var enc *errEncoding
		if errors.As(err, &enc) {
			b.found.set(catEncoding, "the file "+enc.Error())
			return nil
		}
		var tl *errRecordTooLong
		if errors.As(err, &tl) {
			b.tooLong(fmt.Sprintf("object %d of the JSON array", done+1))
			return b.checkRest()
		}
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			b.found.set(catMalformed, fmt.Sprintf("the JSON is not valid near byte %d: %v; the rest cannot be read reliably", dec.InputOffset(), err))
			return b.checkRest()
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			b.found.set(catMalformed, fmt.Sprintf("the JSON has a %s where an object was expected, near byte %d", te.Value, dec.InputOffset()))
			return b.checkRest()
		}
		return fmt.Errorf("parse json: %w", err)
	}
	tok, err := dec.Token()
	if err != nil {
		return fail(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		b.found.set(catMalformed, "a JSON file must be an array of objects ([{…}, {…}])")
		return b.checkRest()
	}
	b.lim.mark(dec.InputOffset())
	for dec.More() {
		if err := ctx.Err(); err != nil {
			return err
		}
		row++
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fail(err)
		}
		if !b.recordEnd(dec.InputOffset(), func() string { return fmt.Sprintf("object %d of the JSON array", row) }) {
			return b.checkRest()
		}
		done = row
		var obj map[string]json.RawMessage
		bad := ""
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			bad = "the element is not an object"
			obj = nil
		}
		fn(row, obj, bad)
	}
	if _, err := dec.Token(); err != nil {
		return fail(err)
	}
	return nil
}

// scalar renders a JSON value as cell text: strings as they are, numbers
// as written, booleans as true/false, null as empty. Objects and arrays are
// not cells.
func scalar(raw json.RawMessage) (string, string) {
	if len(raw) == 0 {
		return "", ""
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", "is not a valid string"
		}
		return s, ""
	case 'n':
		return "", ""
	case 't', 'f':
		return strconv.FormatBool(raw[0] == 't'), ""
	case '{', '[':
		return "", "holds an object or array; only text, numbers and booleans are cell values"
	}
	return string(raw), ""
}

func sortStrings(s []string) { sort.Strings(s) }
