package fetch

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
)

// TestHashWriter: whatever the sizes of the writes (empty, one byte, a
// chunk and a byte over), Sum is SHA-256 of the bytes in order.
func TestHashWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	body := make([]byte, 3*hashChunk+17)
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	for _, c := range []struct {
		name   string
		sizes  []int
		ioCopy bool // the whole body through io.Copy's 32 KiB writes
	}{
		{"nothing", nil, false},
		{"one write", []int{len(body)}, false},
		{"byte by byte then the rest", []int{1, 1, 1, 0, len(body) - 3}, false},
		{"chunk and a byte", []int{hashChunk + 1, hashChunk - 1, len(body) - 2*hashChunk}, false},
		{"io.Copy's 32 KiB", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newHashWriter(sha256.New())
			var want []byte
			if c.ioCopy {
				if _, err := io.Copy(w, bytes.NewReader(body)); err != nil {
					t.Fatal(err)
				}
				want = body
			}
			off := 0
			for _, n := range c.sizes {
				if k, err := w.Write(body[off : off+n]); k != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
				}
				off += n
			}
			if want == nil {
				want = body[:off]
			}
			sum := sha256.Sum256(want)
			if got := w.Sum(); !bytes.Equal(got, sum[:]) {
				t.Fatalf("Sum %x, want %x", got, sum)
			}
			w.Close() // after Sum: a no-op
		})
	}
}
