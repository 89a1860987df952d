package parse

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// sameAsEncodingCSV reads input with csvReader and with encoding/csv alone
// and fails on the first difference: a record, a field's position, the
// input offset after a record, or the error that ends the reading. It
// returns how many records csvReader split itself, so that a test can
// tell it compared that path too.
func sameAsEncodingCSV(t *testing.T, input []byte, comma rune) (fast int) {
	t.Helper()
	// Whole reads, and one byte per read: the buffer then fills in the
	// middle of lines.
	for _, src := range []func() io.Reader{
		func() io.Reader { return bytes.NewReader(input) },
		func() io.Reader { return iotest.OneByteReader(bytes.NewReader(input)) },
	} {
		fast += sameRecords(t, input, comma, src)
	}
	return fast
}

func sameRecords(t *testing.T, input []byte, comma rune, src func() io.Reader) (fast int) {
	t.Helper()
	std := csv.NewReader(bufio.NewReaderSize(src(), 4096))
	std.Comma, std.FieldsPerRecord, std.ReuseRecord = comma, -1, true
	ours := newCSVReader(bufio.NewReaderSize(src(), 4096), comma)
	for n := 1; ; n++ {
		want, werr := std.Read()
		got, gerr := ours.Read()
		if !sameError(werr, gerr) {
			t.Fatalf("%q, comma %q, record %d: error %v, want %v", clipInput(input), comma, n, gerr, werr)
		}
		if werr != nil {
			return fast
		}
		if ours.fast {
			fast++
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q, comma %q, record %d: %q, want %q", clipInput(input), comma, n, got, want)
		}
		for i := range want {
			wl, wc := std.FieldPos(i)
			gl, gc := ours.FieldPos(i)
			if wl != gl || wc != gc {
				t.Fatalf("%q, comma %q, record %d field %d: at %d:%d, want %d:%d", clipInput(input), comma, n, i, gl, gc, wl, wc)
			}
		}
		if w, g := std.InputOffset(), ours.InputOffset(); w != g {
			t.Fatalf("%q, comma %q, record %d: offset %d, want %d", clipInput(input), comma, n, g, w)
		}
	}
}

func sameError(want, got error) bool {
	var wp, gp *csv.ParseError
	if errors.As(want, &wp) && errors.As(got, &gp) {
		return reflect.DeepEqual(*wp, *gp)
	}
	return want == got
}

func clipInput(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func TestCSVReaderCases(t *testing.T) {
	long := strings.Repeat("x", 5000) // longer than the 4096-byte buffer
	for _, in := range []string{
		"",
		"\n",
		"a,b,c\n1,2,3\n",
		"a,b,c\r\n1,2,3\r\n",
		"a,b\n1,2",       // no line end at the end
		"a,b\n1,2\r",     // a CR at the end
		"a,b\n\n\n1,2\n", // blank lines
		"a,b\n\r\n1,2\n",
		"a,b\n,,\n,\n",
		"a,\"b,c\",d\n1,2,3\n",
		"a,b\n\"multi\nline\",x\n3,4\n",
		"a,b\n\"multi\r\nline\",x\r\n3,4\n",
		"a,b\n1,x\"y\n3,4\n",   // a bare quote
		"a,b\n\"open,2\n3,4\n", // a quote never closed
		"a,b\n\"a\"b,2\n3,4\n", // text after a closing quote
		"a,b\n" + long + ",1\n2,3\n",
		"a,b\n" + long + ",\"q\"\n2,3\n",
		"a;b\n1;2\n",
		"ü,é\nñ,ß\n",
		"a, b ,c \n",
		"a,b\n\n\"x\"\n\n",
	} {
		for _, comma := range []rune{',', ';'} {
			sameAsEncodingCSV(t, []byte(in), comma)
		}
	}
}

// TestCSVReaderRandom compares the two readers on random text made of
// the bytes CSV gives a meaning to, with lines now and then longer than
// the buffer.
func TestCSVReaderRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	fastRecords := 0
	tokens := []string{"a", "bc", "ü", ",", ",", ";", "\"", "\"\"", "\n", "\n", "\r\n", "\r", " ", "x,y", "\"q,r\"", "\n\n"}
	for trial := 0; trial < 3000; trial++ {
		var b strings.Builder
		for n := rng.IntN(200); n > 0; n-- {
			b.WriteString(tokens[rng.IntN(len(tokens))])
			if rng.IntN(400) == 0 {
				b.WriteString(strings.Repeat("z", 4000+rng.IntN(300)))
			}
		}
		for _, comma := range []rune{',', ';'} {
			fastRecords += sameAsEncodingCSV(t, []byte(b.String()), comma)
		}
	}
	if fastRecords < 1000 {
		t.Fatalf("only %d records were split without encoding/csv", fastRecords)
	}
}

// TestCSVReaderReadError: an error under the buffer ends both readers the
// same way, after the same records.
func TestCSVReaderReadError(t *testing.T) {
	bad := errors.New("disk on fire")
	for _, cut := range []int{0, 3, 6, 7, 12} {
		text := "a,b\n1,2\n\"x\",4\n5,6\n"[:cut]
		open := func() io.Reader { return io.MultiReader(strings.NewReader(text), &failing{bad}) }
		std := csv.NewReader(bufio.NewReaderSize(open(), 4096))
		std.FieldsPerRecord, std.ReuseRecord = -1, true
		ours := newCSVReader(bufio.NewReaderSize(open(), 4096), ',')
		for {
			want, werr := std.Read()
			got, gerr := ours.Read()
			if !sameError(werr, gerr) || (werr == nil && !slices.Equal(want, got)) {
				t.Fatalf("cut %d: %q %v, want %q %v", cut, got, gerr, want, werr)
			}
			if werr != nil {
				break
			}
		}
	}
}

// failing returns its error on every read, as the layers under the
// parser's buffer do (the UTF-8 check, the record limit).
type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

func FuzzCSVReader(f *testing.F) {
	f.Add([]byte("a,b\n1,\"2\n3\",4\r\n\n5,6"), false)
	f.Add([]byte("a;b\n1;2\n"), true)
	f.Fuzz(func(t *testing.T, input []byte, semicolon bool) {
		comma := ','
		if semicolon {
			comma = ';'
		}
		sameAsEncodingCSV(t, input, comma)
	})
}
