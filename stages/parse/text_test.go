package parse

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// refText is textReader's contract written the slow, obvious way: CRLF and
// lone CR become LF, everything else passes through; lines counts the line
// ends seen.
func refText(in []byte) (out []byte, lines int) {
	for i := 0; i < len(in); i++ {
		switch c := in[i]; {
		case c == '\r':
			out = append(out, '\n')
			lines++
			if i+1 < len(in) && in[i+1] == '\n' {
				i++
			}
		case c == '\n':
			out = append(out, '\n')
			lines++
		default:
			out = append(out, c)
		}
	}
	return out, lines
}

// chunky hands out its bytes in reads of random sizes, as pipes and
// decrypting readers do.
type chunky struct {
	b   []byte
	rnd *rand.Rand
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.b), 1+c.rnd.IntN(9))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// TestTextReaderLineEnds: for random text of line ends of every kind,
// multi-byte characters and long runs, read through reads and buffers of
// random sizes, textReader gives what refText gives and counts the lines.
func TestTextReaderLineEnds(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "bc", "\r", "\n", "\r\n", "\r\r", "\n\r", "é", "東京", "x,y,\"z\"", string(bytes.Repeat([]byte("w"), 300))}
	for trial := 0; trial < 500; trial++ {
		var in []byte
		for k := rnd.IntN(80); k > 0; k-- {
			in = append(in, pieces[rnd.IntN(len(pieces))]...)
		}
		want, lines := refText(in)
		tr := &textReader{src: &chunky{b: in, rnd: rnd}, line: 1}
		var got []byte
		buf := make([]byte, 1+rnd.IntN(40))
		for {
			n, err := tr.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%q: %v", in, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %q\nwant %q", in, got, want)
		}
		if tr.line != lines+1 {
			t.Fatalf("%q: line %d after the text, want %d", in, tr.line, lines+1)
		}
	}
}

// TestTextReaderRefusesDamage: invalid UTF-8 and NUL are refused with the
// line they are on, wherever the read boundaries fall.
func TestTextReaderRefusesDamage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		line int
	}{
		{"ok\nstill ok\r\nbad \xff here\n", 3},
		{"a\rb\rc\x00d", 3},
		{"\xc3", 1},           // cut in the middle of a character
		{"line\n\xe6\x9d", 2}, // the same, on line 2
	} {
		rnd := rand.New(rand.NewPCG(3, 4))
		tr := &textReader{src: &chunky{b: []byte(tc.in), rnd: rnd}, line: 1}
		_, err := io.ReadAll(tr)
		var enc *errEncoding
		if !errors.As(err, &enc) {
			t.Fatalf("%q: %v, want an encoding error", tc.in, err)
		}
		if enc.line != tc.line {
			t.Errorf("%q: line %d, want %d", tc.in, enc.line, tc.line)
		}
	}
}
