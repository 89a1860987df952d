package parse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roster-hr/roster/pipeline"
)

func testBuilder() *builder {
	return &builder{stage: stage{batchRows: 1000, maxFields: 1000, maxRecord: defaultMaxRecordBytes},
		run: &pipeline.Run{Tenant: pipeline.NewTenant("t")}, f: &pipeline.File{}}
}

// TestChunksAreBounded: a chunk goes to the builder at 1,024 records or at
// 4 MiB of the file, whichever comes first, so that rows near
// max_record_bytes (1 MiB) keep at most a few chunks of their text in
// memory, not 1,024 rows of a megabyte each.
func TestChunksAreBounded(t *testing.T) {
	for _, c := range []struct {
		name    string
		rowLen  int
		rows    int
		records int // records per full chunk
	}{
		{"short rows: by count", 40, 3000, chunkRecords},
		{"long rows: by bytes", 900 << 10, 12, 5}, // 5 × 900 KiB ≥ 4 MiB
	} {
		t.Run(c.name, func(t *testing.T) {
			var body strings.Builder
			body.WriteString("email,first_name,last_name\n")
			for i := 0; i < c.rows; i++ {
				line := fmt.Sprintf("u%d@example.com,F,", i)
				body.WriteString(line + strings.Repeat("x", c.rowLen-len(line)-1) + "\n")
			}
			b := testBuilder()
			b.lim = newRecordLimiter(strings.NewReader(body.String()), int64(b.maxRecord))
			r := newCSVReader(bufio.NewReaderSize(b.lim, 1<<20), ',')
			if _, err := r.Read(); err != nil {
				t.Fatal(err)
			}
			b.recordEnd(r.InputOffset(), nil)
			chunks := make(chan *csvChunk, c.rows+1)
			complete, err := b.readRows(context.Background(), r, chunks, make(chan *csvChunk), new(atomic.Bool))
			close(chunks)
			if !complete || err != nil {
				t.Fatalf("complete %v, err %v", complete, err)
			}
			total := 0
			for ch := range chunks {
				total += len(ch.rows)
				if len(ch.rows) > c.records || ch.bytes >= chunkBytes+int64(c.rowLen) {
					t.Fatalf("a chunk of %d records, %d bytes: want at most %d records and under %d bytes", len(ch.rows), ch.bytes, c.records, chunkBytes+c.rowLen)
				}
				if total < c.rows && len(ch.rows) != c.records {
					t.Fatalf("a chunk before the last has %d records, want %d", len(ch.rows), c.records)
				}
			}
			if total != c.rows {
				t.Fatalf("%d records in the chunks, want %d", total, c.rows)
			}
		})
	}
}

// panicAfter reads from r in small pieces and panics once n bytes were read.
type panicAfter struct {
	r io.Reader
	n int
}

func (p *panicAfter) Read(b []byte) (int, error) {
	if p.n <= 0 {
		panic("the reader broke")
	}
	b = b[:min(len(b), 4096, p.n)]
	n, err := p.r.Read(b)
	p.n -= n
	return n, err
}

// TestReaderPanicEndsTheBuilder: a panic under the CSV reader reaches the
// stage's caller (the runner turns it into a failed file), and only once
// the builder goroutine has ended: it writes the file's issues and
// batches, which the runner reads next.
func TestReaderPanicEndsTheBuilder(t *testing.T) {
	var body strings.Builder
	body.WriteString("email,first_name,last_name\n")
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&body, "u%d@example.com,F,L\n", i)
	}
	before := runtime.NumGoroutine()
	b := testBuilder()
	func() {
		defer func() {
			if p := recover(); p != "the reader broke" {
				t.Fatalf("recovered %v, want the reader's panic", p)
			}
		}()
		b.readCSV(context.Background(), &panicAfter{r: strings.NewReader(body.String()), n: 200 << 10}, ',') //nolint:errcheck // it panics
	}()
	if b.rows == 0 {
		t.Fatal("no row was built before the panic: the test would not test the builder")
	}
	// A builder still running when the panic arrived would go on with
	// the chunks waiting for it (the reader runs ahead by a few).
	rowsAtPanic := b.rows
	// The builder has already ended when the panic arrives; allow the
	// runtime a moment to retire the goroutine.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after the panic, %d before: the builder was left behind", n, before)
	}
	if b.rows != rowsAtPanic {
		t.Fatalf("%d rows built when the panic arrived, %d after: the builder was still running", rowsAtPanic, b.rows)
	}
	b.release()
}
