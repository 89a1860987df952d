package diff

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func TestIDIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	spread := func(n int, gap int64) []int64 {
		ids := make([]int64, n)
		id := int64(1 + rng.IntN(5000))
		for i := range ids {
			ids[i] = id
			id += 1 + rng.Int64N(gap)
		}
		return ids
	}
	cases := []struct {
		name  string
		ids   []int64
		dense bool
	}{
		{"none", nil, false},
		{"one", []int64{42}, true},
		{"one block", spread(3000, 1), true},
		{"blocks of 1024", func() []int64 {
			var ids []int64
			for b := int64(0); b < 5; b++ {
				for j := int64(0); j < 1024; j++ {
					ids = append(ids, b*7*1024+j+1) // six of every seven blocks are other tenants'
				}
			}
			return ids
		}(), false},
		{"a few apart", spread(2000, 4), true},
		{"far apart", spread(2000, 1<<20), false},
		{"near the top", []int64{1<<62 - 3, 1<<62 - 1, 1 << 62}, true},
		{"the whole int64 range", []int64{math.MinInt64, -1, 0, math.MaxInt64}, false},
		// The cut: two ids may span 2×denseSpan+4096 ids less one, not more.
		{"at the cut", []int64{10, 10 + 2*denseSpan + 4096 - 1}, true},
		{"past the cut", []int64{10, 10 + 2*denseSpan + 4096}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := newIDIndex(c.ids)
			if dense := x.at != nil; dense != c.dense {
				t.Errorf("dense table = %v, want %v", dense, c.dense)
			}
			have := map[int64]int{}
			for i, id := range c.ids {
				have[id] = i
			}
			probe := []int64{0, -1, 1, 1 << 62, 1<<63 - 1, -1 << 63}
			for _, id := range c.ids {
				probe = append(probe, id)
				if id > math.MinInt64 {
					probe = append(probe, id-1)
				}
				if id < math.MaxInt64 {
					probe = append(probe, id+1)
				}
			}
			for _, id := range probe {
				want, ok := have[id]
				if !ok {
					want = -1
				}
				if got := x.find(id); got != want {
					t.Fatalf("find(%d) = %d, want %d", id, got, want)
				}
			}
		})
	}
}

func TestDigestGroups(t *testing.T) {
	dg := func(b ...byte) digest {
		var d digest
		copy(d[:], b)
		return d
	}
	// Users 0, 1 and 3 differ in one byte only; 2 and 4 share a whole
	// digest; 5 has none (its zero digest must not match a row's zero
	// digest).
	users := []storedUser{
		{id: 10, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 1), hasDg: true},
		{id: 11, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 2), hasDg: true},
		{id: 12, dg: dg(9, 9), hasDg: true},
		{id: 13, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 3), hasDg: true},
		{id: 14, dg: dg(9, 9), hasDg: true},
		{id: 15},
	}
	rows := []digest{
		dg(1, 0, 0, 0, 0, 0, 0, 0, 1), dg(1, 0, 0, 0, 0, 0, 0, 0, 2), dg(1, 0, 0, 0, 0, 0, 0, 0, 3),
		dg(1, 0, 0, 0, 0, 0, 0, 0, 4), dg(9, 9), dg(), dg(7), dg(1, 0, 0, 0, 0, 0, 0, 0, 1),
	}
	want := []int32{0, 1, 3, -1, -1, -1, -1, -1}
	skipLast := func(i int) bool { return i == len(rows)-1 } // a rejected row: never matched
	got := newDigestGroups(users).candidates(rows, skipLast)
	if !slices.Equal(got, want) {
		t.Errorf("candidates = %v, want %v", got, want)
	}
	if got := newDigestGroups(nil).candidates(rows, skipLast); slices.ContainsFunc(got, func(k int32) bool { return k != -1 }) {
		t.Errorf("no users: candidates = %v", got)
	}

	// Many random digests, split into many groups, each row the digest
	// of a user in shuffled order: every one found at its place.
	rng := rand.New(rand.NewPCG(3, 4))
	many := make([]storedUser, 50000)
	for k := range many {
		for j := range many[k].dg {
			many[k].dg[j] = byte(rng.UintN(256))
		}
		many[k].hasDg = k%10 != 0
	}
	g := newDigestGroups(many)
	if len(g.ends) < 16 {
		t.Fatalf("%d groups for %d digests: the split is not exercised", len(g.ends), len(many))
	}
	order := rng.Perm(len(many))
	digs := make([]digest, len(many)+1)
	for i, k := range order {
		digs[i] = many[k].dg
	}
	digs[len(many)][15] = 1 // no user's
	got = g.candidates(digs, func(int) bool { return false })
	for i, k := range order {
		want := int32(k)
		if !many[k].hasDg {
			want = -1
		}
		if got[i] != want {
			t.Fatalf("row %d, user %d's digest: candidate %d, want %d", i, k, got[i], want)
		}
	}
	if got[len(many)] != -1 {
		t.Fatalf("a digest no user has was given user %d", got[len(many)])
	}

	// Each set hashes with a seed of its own, drawn at random, so the
	// groups (and a file written to crowd one) differ from process to
	// process.
	if h := newDigestGroups(many).hash; h(&many[1].dg) == g.hash(&many[1].dg) {
		t.Fatal("two digest groups hash a digest alike: their seeds are not random")
	}
}

// TestMatchFastComparesDigests: a candidate whose digest only hashes like
// the row's (here the hash is the first 8 bytes) is not taken for the
// row's user, though the row would otherwise be fast (an active user, a
// row with an e-mail and nothing else); the same row with the user's own
// digest is.
func TestMatchFastComparesDigests(t *testing.T) {
	first8 := func(d *digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }
	var a, b digest
	a[0], b[0], b[15] = 1, 1, 2 // a and b differ in their last byte only
	emails := array.NewStringBuilder(memory.NewGoAllocator())
	emails.AppendValues([]string{"ada@example.com", "ada@example.com"}, nil)
	col := emails.NewStringArray()
	defer col.Release()
	for _, c := range []struct {
		name string
		row  digest
		fast int
	}{{"another digest, same hash", b, 0}, {"the user's digest", a, 1}} {
		users := []storedUser{{id: 10, dg: a, hasDg: true, active: true}}
		d := &userDiff{
			rows:   []inRow{{idx: 0, has: 1 << fEmail}, {idx: 1, has: 1 << fEmail, rejected: true}},
			cols:   []batchRows{{n: 2}},
			dig:    []digest{c.row, c.row},
			stored: &stored{users: users, byDigest: groupDigests(users, first8)},
		}
		d.cols[0].str[fEmail] = col
		if got := d.stored.byDigest.candidates(d.dig, func(i int) bool { return d.rows[i].rejected }); !slices.Equal(got, []int32{0, -1}) {
			t.Fatalf("%s: candidates = %v: the weak hash does not make the case", c.name, got)
		}
		if slow := d.matchFast(); d.fastN() != c.fast || slow != 2-c.fast {
			t.Errorf("%s: %d rows fast, %d left to the full diff; want %d fast", c.name, d.fastN(), slow, c.fast)
		}
	}
}
