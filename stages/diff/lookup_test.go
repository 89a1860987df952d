package diff

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
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

func TestDigestIndex(t *testing.T) {
	dg := func(b ...byte) digest {
		var d digest
		copy(d[:], b)
		return d
	}
	// The first 8 bytes are the hash: users 0, 1 and 3 collide on it; 2 and
	// 4 share a whole digest; 5 has none (its zero digest must not match a
	// row's zero digest).
	users := []storedUser{
		{id: 10, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 1), hasDg: true},
		{id: 11, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 2), hasDg: true},
		{id: 12, dg: dg(9, 9), hasDg: true},
		{id: 13, dg: dg(1, 0, 0, 0, 0, 0, 0, 0, 3), hasDg: true},
		{id: 14, dg: dg(9, 9), hasDg: true},
		{id: 15},
	}
	x := newDigestIndex(users)
	for _, c := range []struct {
		d    digest
		want int
	}{
		{dg(1, 0, 0, 0, 0, 0, 0, 0, 1), 0},
		{dg(1, 0, 0, 0, 0, 0, 0, 0, 2), 1},
		{dg(1, 0, 0, 0, 0, 0, 0, 0, 3), 3},
		{dg(1, 0, 0, 0, 0, 0, 0, 0, 4), -1},
		{dg(9, 9), -1}, // two users: neither
		{dg(), -1},
		{dg(7), -1},
	} {
		if got := x.find(users, &c.d); got != c.want {
			t.Errorf("find(%x) = %d, want %d", c.d, got, c.want)
		}
	}
	if !users[2].dupDg || users[4].dupDg {
		t.Errorf("dupDg: %v %v, want the first of the two marked", users[2].dupDg, users[4].dupDg)
	}
	if got := (digestIndex{}).find(nil, &digest{}); got != -1 {
		t.Errorf("empty index: find = %d", got)
	}

	// Many random digests: every one found at its place.
	rng := rand.New(rand.NewPCG(3, 4))
	many := make([]storedUser, 50000)
	for k := range many {
		for j := range many[k].dg {
			many[k].dg[j] = byte(rng.UintN(256))
		}
		many[k].hasDg = k%10 != 0
	}
	x = newDigestIndex(many)
	for k := range many {
		want := k
		if !many[k].hasDg {
			want = -1
		}
		if got := x.find(many, &many[k].dg); got != want {
			t.Fatalf("random digest %d: find = %d", k, got)
		}
	}
	if n := slices.IndexFunc(many, func(u storedUser) bool { return u.dupDg }); n >= 0 {
		t.Fatalf("user %d marked as sharing a random digest", n)
	}
	if len(x.slot) < 2*len(many) {
		t.Fatalf("%d slots for %d users: more than half full", len(x.slot), len(many))
	}

	// Tiny tables, nearly half full: probes run past the last slot and
	// wrap to the first, in many of these.
	for trial := 0; trial < 2000; trial++ {
		few := make([]storedUser, 1+rng.IntN(3))
		for k := range few {
			for j := range few[k].dg {
				few[k].dg[j] = byte(rng.UintN(256))
			}
			few[k].hasDg = true
		}
		x := newDigestIndex(few)
		for k := range few {
			if got := x.find(few, &few[k].dg); got != k {
				t.Fatalf("trial %d: user %d of %d found at %d", trial, k, len(few), got)
			}
		}
		var other digest
		other[15] = 1
		if got := x.find(few, &other); got != -1 {
			t.Fatalf("trial %d: a digest no user has found at %d", trial, got)
		}
	}
}
