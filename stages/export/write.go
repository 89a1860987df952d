package export

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

// manifestName is the partition manifest's file name.
const manifestName = "_manifest.json"

// Manifest is a partition's _manifest.json.
type Manifest struct {
	Table         string         `json:"table"`
	Tenant        string         `json:"tenant"`
	Date          string         `json:"dt"`
	Format        string         `json:"format"`
	SchemaVersion int            `json:"schema_version"`
	Rows          int64          `json:"rows"`
	SourceRuns    []int64        `json:"source_runs"`
	Files         []ManifestFile `json:"files"`
	Columns       []ColumnInfo   `json:"columns"`
}

// ManifestFile is one data file of a partition.
type ManifestFile struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	Rows   int64  `json:"rows"`
	SHA256 string `json:"sha256"`
}

// ColumnInfo is one column in a manifest.
type ColumnInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable bool   `json:"nullable"`
}

// PartitionDir is where a table's partition for a tenant and date lives
// under out.
func PartitionDir(out, table, tenant string, date time.Time) string {
	return filepath.Join(out, table, "tenant="+tenant, "dt="+date.Format(time.DateOnly))
}

// CSVName is the CSV file name of a table's partition, e.g.
// ACME_EmployeeSnapshot_20261122.csv.
func CSVName(tenant string, t *table, date time.Time) string {
	return strings.ToUpper(tenant) + "_" + t.csvName + "_" + date.Format("20060102") + ".csv"
}

// dataName is the data file of a partition in a format.
func dataName(format, tenant string, t *table, date time.Time) string {
	if format == FormatCSV {
		return CSVName(tenant, t, date)
	}
	return "part-0.parquet"
}

// tmpSuffix marks files an export is still writing; the random part makes
// every export's names its own.
func tmpName(final string) string {
	b := make([]byte, 6)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return "." + final + ".tmp-" + hex.EncodeToString(b)
}

func isTemp(name string) bool { return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") }

// ours says whether a file in a partition directory is one an export
// writes (so a stale one may be removed when the partition is replaced).
func ours(name string) bool {
	return name == manifestName || isTemp(name) ||
		(strings.HasPrefix(name, "part-") && strings.HasSuffix(name, ".parquet")) || strings.HasSuffix(name, ".csv")
}

// sink receives a table's record batches in one format.
type sink interface {
	write(rec arrow.Record) error
	close() error
}

// stickyWriter counts and hashes what goes to the file and remembers the
// first error: the Parquet writer drops some errors of its final flush, so
// close asks this writer again.
type stickyWriter struct {
	w   io.Writer
	h   hash.Hash
	n   int64
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		s.err = err
	}
	return n, err
}

type parquetSink struct{ fw *pqarrow.FileWriter }

func newParquetSink(w io.Writer, t *table, o Options) (*parquetSink, error) {
	codec := compress.Codecs.Zstd
	if o.Compression == CompressionSnappy {
		codec = compress.Codecs.Snappy
	}
	props := parquet.NewWriterProperties(
		parquet.WithCompression(codec),
		parquet.WithMaxRowGroupLength(int64(o.RowGroupRows)),
		parquet.WithDictionaryDefault(true),
		parquet.WithStats(true),
	)
	fw, err := pqarrow.NewFileWriter(t.schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return nil, err
	}
	return &parquetSink{fw: fw}, nil
}

func (p *parquetSink) write(rec arrow.Record) error { return p.fw.WriteBuffered(rec) }
func (p *parquetSink) close() error                 { return p.fw.Close() }

// csvSink writes RFC 4180 CSV: a header, CRLF line ends, every field
// quoted, cells neutralised against spreadsheet formulas.
type csvSink struct {
	w *bufio.Writer
}

func newCSVSink(w io.Writer, t *table) (*csvSink, error) {
	s := &csvSink{w: bufio.NewWriterSize(w, 1<<16)}
	for i, c := range t.cols {
		if i > 0 {
			s.w.WriteByte(',')
		}
		s.field(c.name)
	}
	_, err := s.w.WriteString("\r\n")
	return s, err
}

func (s *csvSink) field(v string) {
	s.w.WriteByte('"')
	if strings.IndexByte(v, '"') >= 0 {
		v = strings.ReplaceAll(v, `"`, `""`)
	}
	s.w.WriteString(v)
	s.w.WriteByte('"')
}

func (s *csvSink) write(rec arrow.Record) error {
	cols := rec.Columns()
	for i := 0; i < int(rec.NumRows()); i++ {
		for c, a := range cols {
			if c > 0 {
				s.w.WriteByte(',')
			}
			s.field(Neutralize(cell(a, i)))
		}
		if _, err := s.w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	return nil
}

func (s *csvSink) close() error { return s.w.Flush() }

// cell renders one value as CSV text; null is empty.
func cell(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return ""
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(i)
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly)
	case *array.Timestamp:
		return a.Value(i).ToTime(arrow.Microsecond).UTC().Format("2006-01-02T15:04:05.000000Z")
	case *array.Int64:
		return strconv.FormatInt(a.Value(i), 10)
	case *array.Int32:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Boolean:
		return strconv.FormatBool(a.Value(i))
	}
	return a.ValueStr(i)
}

// Neutralize defuses a cell a spreadsheet would run as a formula (it starts
// with = + - @, a tab or a CR) by prefixing an apostrophe (OWASP CSV
// injection).
func Neutralize(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// partition writes one table's partition under temporary names; publish
// renames it into place, discard removes what it wrote.
type partition struct {
	t      *table
	tenant string
	date   time.Time
	format string
	dir    string
	final  string // data file name
	tmp    string // its temporary name
	mtmp   string // the manifest's temporary name
	file   *os.File
	out    *stickyWriter
	sink   sink
	rb     *array.RecordBuilder
	batch  int
	col    int // next column of the current row
	n      int // rows in the builder
	rows   int64
	runs   map[int64]bool
	done   bool
	ctx    context.Context
	// set by finish
	sourceRuns []int64
	sha        string
}

func newPartition(t *table, tenant string, date time.Time, o Options, mem memory.Allocator) (*partition, error) {
	p := &partition{t: t, tenant: tenant, date: date, format: o.Format, batch: o.batchRows(),
		dir: PartitionDir(o.Out, t.name, tenant, date), runs: map[int64]bool{}}
	p.final = dataName(o.Format, tenant, t, date)
	p.tmp = tmpName(p.final)
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("export %s: %w", t.name, err)
	}
	f, err := os.OpenFile(filepath.Join(p.dir, p.tmp), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", t.name, err)
	}
	p.file = f
	var w io.Writer = f
	if o.wrap != nil {
		w = o.wrap(t.name, w)
	}
	p.out = &stickyWriter{w: w, h: sha256.New()}
	if o.Format == FormatCSV {
		p.sink, err = newCSVSink(p.out, t)
	} else {
		p.sink, err = newParquetSink(p.out, t, o)
	}
	if err != nil {
		p.discard()
		return nil, fmt.Errorf("export %s: %w", t.name, err)
	}
	p.rb = array.NewRecordBuilder(mem, t.schema)
	return p, nil
}

func (p *partition) next() array.Builder {
	b := p.rb.Field(p.col)
	p.col++
	return b
}

func (p *partition) str(v string) { p.next().(*array.StringBuilder).Append(v) }

func (p *partition) nstr(v *string) {
	b := p.next().(*array.StringBuilder)
	if v == nil {
		b.AppendNull()
	} else {
		b.Append(*v)
	}
}

func (p *partition) i64(v int64) { p.next().(*array.Int64Builder).Append(v) }

func (p *partition) ni64(v *int64) {
	b := p.next().(*array.Int64Builder)
	if v == nil {
		b.AppendNull()
	} else {
		b.Append(*v)
	}
}

func (p *partition) i32(v int32) { p.next().(*array.Int32Builder).Append(v) }
func (p *partition) bool(v bool) { p.next().(*array.BooleanBuilder).Append(v) }
func (p *partition) day(v day)   { p.next().(*array.Date32Builder).Append(arrow.Date32(v)) }
func (p *partition) nday(v *day) {
	b := p.next().(*array.Date32Builder)
	if v == nil {
		b.AppendNull()
	} else {
		b.Append(arrow.Date32(*v))
	}
}

func (p *partition) ts(v time.Time) {
	p.next().(*array.TimestampBuilder).Append(arrow.Timestamp(v.UTC().UnixMicro()))
}

// run notes a source run of the partition.
func (p *partition) run(id int64) { p.runs[id] = true }

// endRow closes a row, flushing a batch when it is full.
func (p *partition) endRow() error {
	if p.col != len(p.t.cols) {
		panic(fmt.Sprintf("export %s: row has %d values for %d columns", p.t.name, p.col, len(p.t.cols)))
	}
	p.col = 0
	p.n++
	p.rows++
	if p.n >= p.batch {
		return p.flush()
	}
	return nil
}

func (p *partition) flush() error {
	if p.n == 0 {
		return nil
	}
	if p.ctx != nil {
		if err := p.ctx.Err(); err != nil {
			return fmt.Errorf("export %s: %w", p.t.name, err)
		}
	}
	rec := p.rb.NewRecord()
	defer rec.Release()
	p.n = 0
	if err := p.sink.write(rec); err != nil || p.out.err != nil {
		return p.fail(err)
	}
	return nil
}

// fail reports a write error, preferring the file's own (the Parquet
// writer does not always wrap it).
func (p *partition) fail(err error) error {
	if p.out.err != nil {
		err = p.out.err
	}
	return fmt.Errorf("export %s: write %s: %w", p.t.name, p.final, err)
}

// finish completes the data file and writes the manifest, both still
// under their temporary names, synced to disk.
func (p *partition) finish() error {
	err := p.flush()
	if err == nil {
		err = p.sink.close()
	}
	if err == nil {
		err = p.out.err // the Parquet writer drops errors of its final flush
	}
	if err == nil {
		err = p.file.Sync()
	}
	if cerr := p.file.Close(); err == nil {
		err = cerr
	}
	p.file = nil
	if err != nil {
		return p.fail(err)
	}
	p.sourceRuns = make([]int64, 0, len(p.runs))
	for r := range p.runs {
		p.sourceRuns = append(p.sourceRuns, r)
	}
	slices.Sort(p.sourceRuns)
	p.sha = hex.EncodeToString(p.out.h.Sum(nil))
	m := Manifest{Table: p.t.name, Tenant: p.tenant, Date: p.date.Format(time.DateOnly), Format: p.format,
		SchemaVersion: SchemaVersion, Rows: p.rows, SourceRuns: p.sourceRuns,
		Files: []ManifestFile{{Name: p.final, Bytes: p.out.n, Rows: p.rows, SHA256: p.sha}}}
	for _, c := range p.t.cols {
		m.Columns = append(m.Columns, ColumnInfo{Name: c.name, Type: typeName(c.typ), Nullable: c.nullable})
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p.mtmp = tmpName(manifestName)
	if err := writeSynced(filepath.Join(p.dir, p.mtmp), append(body, '\n')); err != nil {
		return fmt.Errorf("export %s: manifest: %w", p.t.name, err)
	}
	p.done = true
	return nil
}

func writeSynced(path string, body []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// publish renames the finished files into place, the manifest last, then
// removes what a previous export left that the new partition does not have
// (a file of the other format, temporary files of an export that died).
func (p *partition) publish() error {
	if !p.done {
		return fmt.Errorf("export %s: publish before finish", p.t.name)
	}
	if err := os.Rename(filepath.Join(p.dir, p.tmp), filepath.Join(p.dir, p.final)); err != nil {
		return fmt.Errorf("export %s: %w", p.t.name, err)
	}
	if err := os.Rename(filepath.Join(p.dir, p.mtmp), filepath.Join(p.dir, manifestName)); err != nil {
		return fmt.Errorf("export %s: %w", p.t.name, err)
	}
	p.tmp, p.mtmp = "", ""
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("export %s: %w", p.t.name, err)
	}
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && ours(n) && n != p.final && n != manifestName {
			os.Remove(filepath.Join(p.dir, n)) //nolint:errcheck // best effort: a stale file is harmless next to the manifest
		}
	}
	return syncDir(p.dir)
}

// discard removes the partition's temporary files; the published
// partition, if any, is untouched.
func (p *partition) discard() {
	if p.file != nil {
		p.file.Close()
		p.file = nil
	}
	if p.rb != nil {
		p.rb.Release()
		p.rb = nil
	}
	for _, n := range []string{p.tmp, p.mtmp} {
		if n != "" {
			os.Remove(filepath.Join(p.dir, n)) //nolint:errcheck
		}
	}
	p.tmp, p.mtmp = "", ""
	os.Remove(p.dir) //nolint:errcheck // only if empty: a partition directory this export created in vain
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) { // some file systems cannot sync a directory
		return nil
	}
	return err
}
