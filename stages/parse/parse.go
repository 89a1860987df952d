// Package parse turns a plaintext CSV or JSON upload into Arrow record
// batches of text columns, mapped to the file template by header name, each
// record carrying its source row number. It makes the file-level checks of
// FILE_RULES.md (encoding, empty, delimiter, unreadable, kind, required
// columns) and reports the first that fails, in that order.
package parse

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Option names.
const (
	OptBatchRows      = "batch_rows"
	OptMaxFields      = "max_fields"
	OptMaxRecordBytes = "max_record_bytes"
)

// defaultMaxRecordBytes bounds one CSV row or JSON object: a real row of
// the template is well under 10 KiB, and a hostile single 200 MB line must
// not be held in memory (several times over) to find out it is wrong.
const defaultMaxRecordBytes = 1 << 20

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "parse",
		Summary: "Reads CSV (RFC 4180) or JSON into Arrow batches of text, mapping columns by header name (case-insensitive, aliases allowed) and keeping each record's spreadsheet row number.",
		Fields: []pipeline.Field{
			{Name: OptBatchRows, Default: 16384, Help: "rows per Arrow record batch; larger batches mean fewer, bigger allocations, smaller ones share the cores more evenly (normalize, validate and diff take batches in turns; on 2 cores, against 65,536: a 100k-row file has 7 batches, not 2, and its stages before apply took ~10% less, a 1M-row unchanged file ~15% less; 1M first loads the same)"},
			{Name: OptMaxFields, Default: 1000, Help: "most columns a header may have; a wider header is rejected as malformed_csv before rows are read"},
			{Name: OptMaxRecordBytes, Default: defaultMaxRecordBytes, Help: "most bytes one CSV row (header included) or JSON object may have; reading stops at a longer one and the file is rejected as malformed_csv, so a huge line is never held in memory; at most 1 GiB (1073741824)"},
		},
		New: func(o pipeline.Options) (any, error) {
			s := stage{batchRows: o.Int(OptBatchRows), maxFields: o.Int(OptMaxFields), maxRecord: o.Int(OptMaxRecordBytes)}
			if _, set := o[OptMaxRecordBytes]; !set {
				s.maxRecord = defaultMaxRecordBytes // callers building the stage by hand (fuzz tests)
			}
			if s.batchRows < 1 || s.maxFields < 1 || s.maxRecord < 1 {
				return nil, errors.New("batch_rows, max_fields and max_record_bytes must be positive")
			}
			// A batch is cut once its text reaches maxBatchBytes, so one
			// more record of at most as much keeps its offsets in an int32.
			if s.maxRecord > maxBatchBytes {
				return nil, fmt.Errorf("max_record_bytes is %d, more than the %d a record may have", s.maxRecord, maxBatchBytes)
			}
			return s, nil
		},
	}
}

type stage struct{ batchRows, maxFields, maxRecord int }

// finding categories, in the order FILE_RULES.md checks them.
const (
	catEncoding = iota
	catEmpty
	catDelimiter
	catMalformed
	catKind
	catRequired
	numCats
)

var catCode = [numCats]string{schemas.CodeInvalidEncoding, schemas.CodeEmptyFile, schemas.CodeWrongDelimiter,
	schemas.CodeMalformedCSV, schemas.CodeUnknownFileKind, schemas.CodeMissingRequiredColumn}

// findings keeps the first problem of each category.
type findings [numCats]string

func (fs *findings) set(cat int, msg string) {
	if fs[cat] == "" {
		fs[cat] = msg
	}
}

func (fs *findings) first() error {
	for cat, msg := range fs {
		if msg != "" {
			return pipeline.Reject(catCode[cat], "%s", msg)
		}
	}
	return nil
}

func (s stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (_ pipeline.Stats, perr error) {
	path := f.Plain
	if path == "" {
		path = f.Staged
	}
	ext := strings.ToLower(filepath.Ext(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(f.Name, ".pgp"), ".gpg"), ".asc")))
	in, err := os.Open(path)
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("parse: %w", err)
	}
	defer in.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(in, head)
	head = head[:n]
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return pipeline.Stats{}, fmt.Errorf("parse: %w", err)
	}
	if strings.TrimSpace(strings.TrimPrefix(string(head), "\uFEFF")) == "" && n < 512 {
		return pipeline.Stats{}, pipeline.Reject(schemas.CodeEmptyFile, "the file is empty; export the users again and upload the file with its header row")
	}
	if msg := sniffBinary(head); msg != "" {
		return pipeline.Stats{}, pipeline.Reject(schemas.CodeUnsupportedFormat, "%s", msg)
	}
	text, err := openText(in)
	if err != nil {
		return pipeline.Stats{}, err
	}
	// A rejected file reports only its first file-level failure
	// (FILE_RULES.md "only the first failure is reported"): the row issues
	// and warnings found while reading (unknown_column, malformed_row) are
	// dropped with the file, since none of its rows is applied.
	issuesBefore, rejectedBefore := f.Issues, f.Rejected
	defer func() {
		if perr != nil {
			f.Issues, f.Rejected = issuesBefore, rejectedBefore
		}
	}()
	b := &builder{stage: s, run: run, f: f}
	if ext == ".json" || (ext != ".csv" && firstNonSpace(head) == '[') {
		f.Format = "json"
		err = b.readJSON(ctx, path)
	} else {
		f.Format = "csv"
		err = b.readCSV(ctx, text, ',')
		if err == nil && b.semicolons && run.Tenant.Delimiter == "auto" {
			// The tenant allows Excel's European ';' export: read it again
			// with ';' as the delimiter.
			b.reset()
			if _, serr := in.Seek(0, io.SeekStart); serr != nil {
				return pipeline.Stats{}, fmt.Errorf("parse: %w", serr)
			}
			text, _ = openText(in)
			err = b.readCSV(ctx, text, ';')
		}
	}
	if err != nil {
		b.release()
		return pipeline.Stats{}, err
	}
	if err := b.found.first(); err != nil {
		b.release()
		return pipeline.Stats{}, err
	}
	f.Kind, f.Columns, f.Batches, f.Rows = b.kind, b.cols, b.batches, b.rows
	f.Counts.Rows = b.rows
	return pipeline.Stats{RowsIn: int64(b.rows), RowsOut: int64(b.rows)}, nil
}

func firstNonSpace(b []byte) byte {
	s := strings.TrimLeft(strings.TrimPrefix(string(b), "\uFEFF"), " \t\r\n")
	if s == "" {
		return 0
	}
	return s[0]
}

// sniffBinary names formats people upload by mistake.
func sniffBinary(head []byte) string {
	switch {
	case strings.HasPrefix(string(head), "PK\x03\x04"):
		return "this is a ZIP or Excel workbook (.xlsx), not CSV; open it in Excel and use File → Save As → CSV UTF-8"
	case strings.HasPrefix(string(head), "\xD0\xCF\x11\xE0"):
		return "this is an old Excel workbook (.xls), not CSV; open it in Excel and use File → Save As → CSV UTF-8"
	case strings.HasPrefix(string(head), "%PDF"):
		return "this is a PDF, not CSV; export the user list from your HR system as CSV"
	}
	return ""
}

// builder accumulates a file's batches.
type builder struct {
	stage
	run   *pipeline.Run
	f     *pipeline.File
	found findings

	kind       schemas.Kind
	cols       []schemas.Column
	schema     *arrow.Schema
	cur        *batchCols // the batch being built, nil between batches
	textHint   []int      // per column, the text bytes of the last batch (to reserve)
	hintRows   int        // the last batch's rows
	batches    []arrow.Record
	rows       int // data rows in batches
	semicolons bool
	warned     []pipeline.Issue
	// rest is the text the reader reads from, for checkRest.
	rest io.Reader
	// lim bounds one record (max_record_bytes) under rest.
	lim *recordLimiter
}

func (b *builder) reset() {
	b.release()
	*b = builder{stage: b.stage, run: b.run, f: b.f}
}

// tooLong records the finding for a record over max_record_bytes; what is
// the record's name in the file ("row 7", "object 3").
func (b *builder) tooLong(what string) {
	b.found.set(catMalformed, fmt.Sprintf("%s is longer than %d bytes, the most roster reads in one record; reading stopped there. A line break is probably missing: export the file again as CSV UTF-8", what, b.maxRecord))
}

// recordEnd checks the record that ended at offset end (the decoder's input
// offset) against max_record_bytes and marks the start of the next one. It
// reports false, with the finding recorded, when the record was too long.
// what names the record for that finding; it is only called then
// (formatting a name for each of a million rows cost a million allocations).
func (b *builder) recordEnd(end int64, what func() string) bool {
	if end-b.lim.start > int64(b.maxRecord) {
		b.tooLong(what())
		return false
	}
	b.lim.mark(end)
	return true
}

func (b *builder) release() {
	for _, r := range b.batches {
		r.Release()
	}
	b.batches, b.cur = nil, nil
}

// header maps header names to template columns: fieldCol[i] is the output
// column of field i, or -1. It records kind and required-column findings.
func (b *builder) header(names []string) (fieldCol []int) {
	kind, ok := schemas.DetectKind(names)
	if !ok {
		b.found.set(catKind, fmt.Sprintf("the header (%s) has none of the user-file columns email, first_name, last_name, employee_id, nor a department-file column name; check the first row is the header of our template", quoteList(names, 8)))
		return nil
	}
	b.kind = kind
	tmpl := schemas.ForKind(kind)
	fieldCol = make([]int, len(names))
	seen := map[string]bool{}
	for i, h := range names {
		fieldCol[i] = -1
		if strings.TrimSpace(h) == "" {
			continue
		}
		col, ok := tmpl.Lookup(h, b.run.Tenant.CustomFields)
		if !ok {
			b.warned = append(b.warned, pipeline.Issue{Row: 1, Column: h, Code: schemas.CodeUnknownColumn, Severity: pipeline.SeverityWarning,
				Message: fmt.Sprintf("column %q is not in the %s template and was ignored", h, kind)})
			continue
		}
		if seen[col.Name] {
			b.warned = append(b.warned, pipeline.Issue{Row: 1, Column: h, Code: schemas.CodeUnknownColumn, Severity: pipeline.SeverityWarning,
				Message: fmt.Sprintf("column %q appears twice; only the first one is read", col.Name)})
			continue
		}
		seen[col.Name] = true
		fieldCol[i] = len(b.cols)
		b.cols = append(b.cols, col)
	}
	var missing []string
	for _, c := range tmpl.Columns {
		if c.Required && !seen[c.Name] {
			missing = append(missing, c.Name)
		}
	}
	if len(missing) > 0 {
		b.found.set(catRequired, fmt.Sprintf("the %s file has no %s column; add it to the header (required: %s)",
			kind, strings.Join(missing, ", "), strings.Join(requiredOf(tmpl), ", ")))
		return nil
	}
	fields := []arrow.Field{{Name: schemas.RowColumn, Type: arrow.PrimitiveTypes.Int32}}
	for _, c := range b.cols {
		fields = append(fields, arrow.Field{Name: c.Name, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	b.schema = arrow.NewSchema(fields, nil)
	return fieldCol
}

func requiredOf(t schemas.Template) []string {
	var r []string
	for _, c := range t.Columns {
		if c.Required {
			r = append(r, c.Name)
		}
	}
	return r
}

func quoteList(names []string, max int) string {
	var q []string
	for i, n := range names {
		if i == max {
			q = append(q, "…")
			break
		}
		q = append(q, fmt.Sprintf("%q", n))
	}
	return strings.Join(q, ", ")
}

// startRow begins a record with source row number row.
func (b *builder) startRow(row int) {
	if b.cur == nil {
		// A new batch: room for its rows, and for as much text per column
		// as the last batch had per row, so the buffers are not grown (and
		// copied) a dozen times per batch. The first batch of a file starts
		// smaller: most files are far below one batch.
		rows := b.batchRows
		if len(b.batches) == 0 {
			rows = min(rows, 4096)
		}
		b.cur = newBatchCols(len(b.cols), rows, scaleHints(b.textHint, b.hintRows, rows))
	}
	b.cur.rows = append(grow(b.cur.rows, 1), int32(row))
}

// scaleHints scales the text per column of a batch of from rows to a batch
// of to rows, in place, and caps the total at maxBatchBytes: a batch cut
// there (rows of ~1 MiB) has fewer rows than the next may have, and
// scaling its gigabyte up by the rows alone would reserve tens of them.
func scaleHints(hint []int, from, to int) []int {
	if from <= 0 || from == to {
		return hint
	}
	// In float64: batch_rows is the operator's to set, and int64 products
	// of bytes and rows could overflow.
	scale, total := float64(to)/float64(from), 0.0
	for _, h := range hint {
		total += float64(h) * scale
	}
	if total > maxBatchBytes {
		scale *= maxBatchBytes / total
	}
	for c := range hint {
		hint[c] = int(float64(hint[c]) * scale)
	}
	return hint
}

// cell appends column c's value of the current record; absent cells (a JSON
// key missing from the object) are null, empty cells "".
func (b *builder) cell(c int, v string, present bool) {
	b.cur.add(c, v, present)
}

func (b *builder) endRow() {
	b.rows++
	if len(b.cur.rows) >= b.batchRows || b.cur.bytes >= maxBatchBytes {
		b.flush()
	}
}

func (b *builder) flush() {
	if b.cur == nil { // startRow makes a batch with its first row
		return
	}
	b.textHint = b.textHint[:0]
	for _, t := range b.cur.text {
		n := len(t.data)
		b.textHint = append(b.textHint, n+n/8)
	}
	b.hintRows = len(b.cur.rows)
	b.batches = append(b.batches, b.cur.record(b.schema))
	b.cur = nil
}

// rowIssue records a row-level issue and optionally rejects the row (its
// 0-based position is the row count before endRow).
func (b *builder) rejectRow(row int, code, msg, value string) {
	b.f.Issues.Add(pipeline.Issue{Row: row, Code: code, Severity: pipeline.SeverityError, Message: msg, Value: value})
	b.f.Rejected.Add(b.rows)
}

func (b *builder) readCSV(ctx context.Context, text io.Reader, comma rune) error {
	b.lim = newRecordLimiter(text, int64(b.maxRecord))
	br := bufio.NewReaderSize(b.lim, 1<<20)
	b.rest = br
	r := newCSVReader(br, comma)
	hdr, err := r.Read()
	if err != nil {
		return b.csvError(err, 1)
	}
	if !b.recordEnd(r.InputOffset(), func() string { return "row 1 (the header)" }) {
		return b.checkRest()
	}
	if len(hdr) > b.maxFields {
		b.found.set(catMalformed, fmt.Sprintf("the header has %d columns, more than the %d roster reads; check the file is our template", len(hdr), b.maxFields))
		return b.drain(r)
	}
	names := trimTrailingEmpty(append([]string(nil), hdr...))
	if comma == ',' && len(names) == 1 && strings.Count(names[0], ";") > 0 {
		if k, ok := schemas.DetectKind(strings.Split(names[0], ";")); ok {
			b.semicolons = true
			if b.run.Tenant.Delimiter != "auto" {
				b.found.set(catDelimiter, fmt.Sprintf("the header is separated by ';', not ',' (a %s file saved by Excel in a European locale); save the file as CSV with commas (Excel: File → Save As → CSV UTF-8 (Comma delimited)), or ask us to allow ';' for your account", k))
			}
		}
	}
	fieldCol := b.header(names)
	if fieldCol == nil || b.semicolons {
		// The file is rejected, but a worse finding further down (bad
		// encoding, damage) takes precedence: read on without building.
		return b.drain(r)
	}
	for _, w := range b.warned {
		b.f.Issues.Add(w)
	}
	// Two goroutines share the rows: this one decodes the CSV (with the
	// UTF-8 check and the record limit under it), the other appends the
	// fields to the batch's columns (batchCols). Each is about half of
	// parse on a large file.
	chunks := make(chan *csvChunk, 4)
	free := make(chan *csvChunk, 8)
	var crash any
	var stop atomic.Bool // the builder died: the reader stops too
	built := make(chan struct{})
	go func() {
		defer close(built)
		defer func() {
			if p := recover(); p != nil {
				crash = fmt.Sprintf("%v (building batches)\n%s", p, debug.Stack())
				stop.Store(true)
				for range chunks {
				}
			}
		}()
		b.buildRows(chunks, free, len(names), fieldCol)
	}()
	complete, err := func() (bool, error) {
		// Deferred, so that a panic under the reader (the decoder, the
		// text checks) also ends the builder before the runner, which
		// recovers it, reads the file the builder writes.
		defer func() {
			close(chunks)
			<-built
		}()
		return b.readRows(ctx, r, chunks, free, &stop)
	}()
	if crash != nil {
		panic(crash) // in the stage's goroutine, where the runner turns it into a failed file
	}
	if !complete {
		return err // a finding stopped the rows (nil), or a system error
	}
	b.flush()
	if b.rows == 0 {
		b.found.set(catEmpty, "the file has a header but no data rows")
	}
	return nil
}

// csvChunk carries records from readRows to buildRows.
type csvChunk struct {
	rows   []int    // each record's spreadsheet row
	ends   []int    // record i's fields are fields[ends[i-1]:ends[i]]
	fields []string // substrings of the decoder's one string per record
	bytes  int64    // the records' length in the file, which their strings keep alive
}

// A chunk goes to the builder at chunkRecords records, enough that the
// channel is not the cost and few enough that both goroutines start at
// once, or at chunkBytes: the strings of the records in flight (six
// chunks at most) stay in memory until built, and rows near
// max_record_bytes must not make that gigabytes.
const (
	chunkRecords = 1024
	chunkBytes   = 4 << 20
)

// readRows decodes the data rows into chunks for buildRows. complete is
// true when it read to the end of the file; otherwise err is nil after a
// finding (recorded in b.found) or a system error. The records read before
// the end are sent either way. It stops, incomplete, when stop is set.
func (b *builder) readRows(ctx context.Context, r *csvReader, chunks chan<- *csvChunk, free chan *csvChunk, stop *atomic.Bool) (complete bool, err error) {
	ch := &csvChunk{}
	defer func() {
		if len(ch.rows) > 0 {
			chunks <- ch
		}
	}()
	row, prevEnd := 1, 1
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if stop.Load() {
			return false, nil
		}
		rec, err := r.Read()
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, b.csvError(err, row+1)
		}
		// Spreadsheet rows: blank lines, which encoding/csv skips, are rows
		// too; a quoted field spanning lines is still one row.
		start, _ := r.FieldPos(0)
		if start > prevEnd+1 {
			row += start - prevEnd - 1
		}
		row++
		recStart := b.lim.start
		if !b.recordEnd(r.InputOffset(), func() string { return fmt.Sprintf("row %d", row) }) {
			return false, b.checkRest()
		}
		last := rec[len(rec)-1]
		lastLine, _ := r.FieldPos(len(rec) - 1)
		prevEnd = lastLine + strings.Count(last, "\n")
		fields := trimTrailingEmpty(rec)
		if len(fields) == 0 {
			continue // an all-empty row (",,,,"), as spreadsheets leave at the end
		}
		// rec is reused by the decoder, the strings it holds are not.
		ch.rows = append(ch.rows, row)
		ch.fields = append(ch.fields, fields...)
		ch.ends = append(ch.ends, len(ch.fields))
		ch.bytes += b.lim.start - recStart
		if len(ch.rows) == chunkRecords || ch.bytes >= chunkBytes {
			chunks <- ch
			select {
			case ch = <-free:
				ch.rows, ch.ends, ch.fields, ch.bytes = ch.rows[:0], ch.ends[:0], ch.fields[:0], 0
			default:
				ch = &csvChunk{}
			}
		}
	}
}

// buildRows appends the chunks' records to the batches, in file order, and
// hands each chunk back through free. names is the header's width and
// fieldCol maps a field to its column (-1: not read).
func (b *builder) buildRows(chunks <-chan *csvChunk, free chan<- *csvChunk, names int, fieldCol []int) {
	have := make([]bool, len(b.cols))
	for ch := range chunks {
		from := 0
		for k, row := range ch.rows {
			b.buildRow(row, ch.fields[from:ch.ends[k]], names, fieldCol, have)
			from = ch.ends[k]
		}
		clear(ch.fields) // let the decoder's strings go
		select {
		case free <- ch:
		default:
		}
	}
}

// buildRow appends one record's fields as a row; have is scratch space of
// one flag per column.
func (b *builder) buildRow(row int, fields []string, names int, fieldCol []int, have []bool) {
	b.startRow(row)
	if len(fields) > names {
		b.rejectRow(row, schemas.CodeMalformedRow,
			fmt.Sprintf("the row has %d values but the header has %d columns; a value probably contains an unquoted comma: put quotes around it", len(fields), names), "")
	}
	filled := 0
	for i, v := range fields {
		if i < len(fieldCol) && fieldCol[i] >= 0 {
			b.cell(fieldCol[i], v, true)
			filled++
		}
	}
	if filled < len(b.cols) {
		// Fewer fields than the header: the missing ones are empty.
		clear(have)
		for i := range fields {
			if i < len(fieldCol) && fieldCol[i] >= 0 {
				have[fieldCol[i]] = true
			}
		}
		for c, ok := range have {
			if !ok {
				b.cell(c, "", true)
			}
		}
	}
	b.endRow()
}

// drain reads the rest of the file to find encoding damage or malformed
// CSV, which outrank the finding that stopped the build.
func (b *builder) drain(r *csvReader) error {
	rows := 0
	for {
		_, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return b.csvError(err, rows+2)
		}
		rows++
		if !b.recordEnd(r.InputOffset(), func() string { return fmt.Sprintf("row %d", rows+1) }) {
			return b.checkRest()
		}
	}
	if rows == 0 {
		b.found.set(catEmpty, "the file has a header but no data rows")
	}
	return nil
}

// csvError turns a read error into a finding (nil error) or a system error.
func (b *builder) csvError(err error, row int) error {
	var enc *errEncoding
	if errors.As(err, &enc) {
		b.found.set(catEncoding, "the file "+enc.Error())
		return nil
	}
	var tl *errRecordTooLong
	if errors.As(err, &tl) {
		b.tooLong(fmt.Sprintf("row %d", row))
		return b.checkRest()
	}
	if err == io.EOF {
		b.found.set(catEmpty, "the file is empty; export the users again and upload the file with its header row")
		return nil
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		what := "is damaged"
		switch {
		case errors.Is(pe.Err, csv.ErrQuote):
			what = "has a quote that is never closed, or text right after a closing quote"
		case errors.Is(pe.Err, csv.ErrBareQuote):
			what = "has a quote (\") inside a value that is not itself in quotes; put the value in quotes and double the inner quote (\"\")"
		}
		b.found.set(catMalformed, fmt.Sprintf("the file %s at line %d, column %d; the rest cannot be read reliably. Export the file again as CSV", what, pe.StartLine, pe.Column))
		return b.checkRest()
	}
	return fmt.Errorf("parse: %w", err)
}

// checkRest reads what the reader left of the file through the UTF-8
// check. A CSV or JSON reader stops at the first damage, but bad encoding
// outranks damage (FILE_RULES.md checks encoding first) wherever it is: a
// stray quote on line 2 must not hide Latin-1 bytes on line 5000.
func (b *builder) checkRest() error {
	if b.rest == nil {
		return nil
	}
	if b.lim != nil {
		b.lim.off = true // only the encoding is checked now, streaming
	}
	_, err := io.Copy(io.Discard, b.rest)
	var enc *errEncoding
	switch {
	case err == nil:
		return nil
	case errors.As(err, &enc):
		b.found.set(catEncoding, "the file "+enc.Error())
		return nil
	}
	return fmt.Errorf("parse: %w", err)
}

func trimTrailingEmpty(rec []string) []string {
	n := len(rec)
	for n > 0 && strings.TrimSpace(rec[n-1]) == "" {
		n--
	}
	return rec[:n]
}
