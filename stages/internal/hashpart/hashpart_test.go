package hashpart

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBits(t *testing.T) {
	for _, c := range []struct{ n, want int }{
		{0, 0}, {1, 0}, {groupSize, 0}, {groupSize + 1, 1}, {2 * groupSize, 1}, {2*groupSize + 1, 1}, {2*groupSize + 2, 2},
		{1_000_000, 9}, {groupSize << maxBits, maxBits}, {1 << 40, maxBits},
	} {
		if got := Bits(c.n); got != c.want {
			t.Errorf("Bits(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, b := range []int{0, 1, 3, 8} {
		in := make([]Entry, 5000)
		for i := range in {
			in[i] = Entry{Hash: rng.Uint64(), Pos: int32(i)}
		}
		orig := slices.Clone(in)
		grouped, ends := Split(in, b)
		if !slices.Equal(in, orig) {
			t.Fatalf("bits %d: the entries given were changed", b)
		}
		if len(ends) != 1<<b || ends[len(ends)-1] != len(in) {
			t.Fatalf("bits %d: %d groups ending at %d, want %d ending at %d", b, len(ends), ends[len(ends)-1], 1<<b, len(in))
		}
		from := 0
		for g, end := range ends {
			group := grouped[from:end]
			if got := Group(grouped, ends, g); !slices.Equal(got, group) {
				t.Fatalf("bits %d: Group(%d) = %d entries, want %d", b, g, len(got), len(group))
			}
			for j, e := range group {
				if b > 0 && int(e.Hash>>(64-b)) != g {
					t.Fatalf("bits %d: hash %x in group %d", b, e.Hash, g)
				}
				// Within a group, the order given: here ascending Pos.
				if j > 0 && e.Pos <= group[j-1].Pos {
					t.Fatalf("bits %d, group %d: position %d after %d", b, g, e.Pos, group[j-1].Pos)
				}
			}
			from = end
		}
		// A permutation: every entry once.
		seen := make([]bool, len(in))
		for _, e := range grouped {
			if seen[e.Pos] || e != orig[e.Pos] {
				t.Fatalf("bits %d: entry %v twice or changed", b, e)
			}
			seen[e.Pos] = true
		}
	}
	if g, ends := Split(nil, 4); len(g) != 0 || len(ends) != 16 || ends[15] != 0 {
		t.Fatalf("no entries: %v %v", g, ends)
	}
}

func TestTable(t *testing.T) {
	// Keys "a" and "b" share a hash, "d" shares only the low bits the
	// slots are taken from: every key starts its probe at one slot.
	keys := []string{"a", "b", "a", "c", "d", "b", "d", "e"}
	hash := map[string]uint64{"a": 7, "b": 7, "c": 8, "d": 7 + 1<<40, "e": 9}
	want := []int32{0, 1, 0, 3, 4, 1, 4, 7}
	var tab Table
	tab.Reset(len(keys))
	for pos, k := range keys {
		asked := 0
		got := tab.Add(Entry{hash[k], int32(pos)}, func(p int32) bool {
			asked++
			if hash[keys[p]] != hash[k] {
				t.Errorf("%q at %d compared with %q: hashes differ", k, pos, keys[p])
			}
			return keys[p] == k
		})
		if got != want[pos] {
			t.Errorf("Add(%q at %d) = %d, want %d", k, pos, got, want[pos])
		}
		if k == "c" && asked != 0 {
			t.Errorf("%q compared %d times with keys of another hash", k, asked)
		}
	}
	for pos, k := range keys {
		if got := tab.Find(Entry{hash[k], -1}, func(p int32) bool { return keys[p] == k }); got != want[pos] {
			t.Errorf("Find(%q) = %d, want %d", k, got, want[pos])
		}
	}
	if got := tab.Find(Entry{7, -1}, func(p int32) bool { return false }); got != -1 {
		t.Errorf("Find of an absent key with a present hash = %d", got)
	}
	if got := (&Table{}).Find(Entry{7, 0}, func(int32) bool { return true }); got != -1 {
		t.Errorf("Find in a table never reset = %d", got)
	}

	// Reset empties the table it reuses, and sizes it at least twice n.
	tab.Reset(3)
	if len(tab.slot) < 6 {
		t.Fatalf("%d slots for 3 entries: more than half full", len(tab.slot))
	}
	if got := tab.Find(Entry{hash["a"], -1}, func(int32) bool { return true }); got != -1 {
		t.Fatalf("after Reset, Find = %d", got)
	}

	// Tiny tables, nearly half full, with hashes at the last slots: probes
	// run past the end and wrap to the first slot.
	rng := rand.New(rand.NewPCG(9, 10))
	for trial := 0; trial < 2000; trial++ {
		n := 1 + rng.IntN(3)
		tab.Reset(n)
		hs := make([]uint64, n)
		for pos := range hs {
			hs[pos] = tab.mask - uint64(rng.IntN(2)) // one of the last two slots
			if pos > 0 && rng.IntN(2) == 0 {
				hs[pos] = hs[pos-1]
			}
			if got := tab.Add(Entry{hs[pos], int32(pos)}, func(p int32) bool { return int(p) == pos }); got != int32(pos) {
				t.Fatalf("trial %d: new key at %d found at %d", trial, pos, got)
			}
		}
		for pos := range hs {
			if got := tab.Find(Entry{hs[pos], -1}, func(p int32) bool { return int(p) == pos }); got != int32(pos) {
				t.Fatalf("trial %d: key %d found at %d", trial, pos, got)
			}
		}
	}
}
