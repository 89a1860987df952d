package validate

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/xxh3"
)

func TestFirstRows(t *testing.T) {
	// hash makes collisions on purpose: "a" and "b" share one hash, and
	// every value's hash lands in the same few slots of a small table.
	hashes := map[string]uint64{"a": 7, "b": 7, "c": 8, "d": 7 + 1<<40}
	values := []string{"a", "b", "a", "c", "d", "b", "d", "e"}
	hash := func(v string) uint64 {
		if h, ok := hashes[v]; ok {
			return h
		}
		return xxh3.HashString(v)
	}
	want := []int32{0, 1, 0, 3, 4, 1, 4, 7}
	tab := newFirstRows(len(values))
	for pos, v := range values {
		got := tab.add(hash(v), int32(pos), func(p int32) bool { return values[p] == v })
		if got != want[pos] {
			t.Errorf("add(%q at %d) = %d, want %d", v, pos, got, want[pos])
		}
	}

	// Many values, each twice: the second finds the first, and values are
	// compared (same called) only when the high halves of their hashes
	// are equal: for a hundred thousand random hashes, almost never.
	const n = 100000
	tab = newFirstRows(2 * n)
	if len(tab.slot) < 4*n {
		t.Fatalf("%d slots for %d positions: more than half full", len(tab.slot), 2*n)
	}
	key := func(pos int) string { return fmt.Sprint(pos % n) }
	compared := 0
	for pos := 0; pos < 2*n; pos++ {
		v := key(pos)
		got := tab.add(xxh3.HashStringSeed(v, tab.seed), int32(pos), func(p int32) bool { compared++; return key(int(p)) == v })
		if want := int32(pos % n); got != want {
			t.Fatalf("value %s at %d: first at %d, want %d", v, pos, got, want)
		}
	}
	if compared < n || compared > n+5 {
		t.Fatalf("%d comparisons of values for %d repeats: the hash halves are not checked first", compared, n)
	}

	// Tiny tables, nearly half full: probes run past the last slot and
	// wrap to the first, in many of these.
	rng := rand.New(rand.NewPCG(9, 10))
	for trial := 0; trial < 2000; trial++ {
		m := 1 + rng.IntN(3)
		tab := newFirstRows(m)
		hs := make([]uint64, m)
		for pos := range hs {
			hs[pos] = rng.Uint64()
			if got := tab.add(hs[pos], int32(pos), func(p int32) bool { return hs[p] == hs[pos] }); got != int32(pos) {
				t.Fatalf("trial %d: new value at %d found at %d", trial, pos, got)
			}
		}
		for pos := range hs {
			if got := tab.add(hs[pos], int32(m+pos), func(p int32) bool { return hs[p%int32(m)] == hs[pos] }); got != int32(pos) {
				t.Fatalf("trial %d: repeat of %d found at %d", trial, pos, got)
			}
		}
	}
}
