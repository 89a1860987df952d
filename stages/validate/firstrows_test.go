package validate

import (
	"fmt"
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

	// Many values, each twice: the second finds the first.
	const n = 100000
	tab = newFirstRows(2 * n)
	key := func(pos int) string { return fmt.Sprint(pos % n) }
	for pos := 0; pos < 2*n; pos++ {
		v := key(pos)
		got := tab.add(xxh3.HashString(v), int32(pos), func(p int32) bool { return key(int(p)) == v })
		if want := int32(pos % n); got != want {
			t.Fatalf("value %s at %d: first at %d, want %d", v, pos, got, want)
		}
	}
}
