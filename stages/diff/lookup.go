package diff

import (
	"math/rand/v2"
	"slices"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/internal/hashpart"
	"github.com/zeebo/xxh3"
)

// idIndex finds a user's place in an id-ordered list of users.
//
// A tenant's user ids come from users_id_seq in blocks (migration 0006),
// so they are mostly dense: while they span at most denseSpan ids per
// user, a table from id to place answers with one memory read. Otherwise
// (a tenant whose users were created a few at a time among many other
// tenants' users) it is a binary search. On the 1M-user benchmark the
// search was ~0.25 s of CPU in the unchanged file's diff, the table
// ~0.02 s.
type idIndex struct {
	ids []int64 // ascending
	min int64
	at  []int32 // at[id-min]: place + 1, 0 for none; nil: binary search
}

// denseSpan is how many ids per user the table may span: 4 bytes per id,
// so at most 16 bytes per user beside the users themselves.
const denseSpan = 4

// newIDIndex indexes ids, which must be ascending.
func newIDIndex(ids []int64) idIndex {
	x := idIndex{ids: ids}
	if len(ids) == 0 {
		return x
	}
	x.min = ids[0]
	// The span less one: ids from MinInt64 to MaxInt64 would make it 2^64.
	d := uint64(ids[len(ids)-1]) - uint64(ids[0])
	if d >= uint64(len(ids))*denseSpan+4096 {
		return x
	}
	x.at = make([]int32, d+1)
	for i, id := range ids {
		x.at[id-x.min] = int32(i + 1)
	}
	return x
}

// find returns the place of the user with this id, or -1.
func (x idIndex) find(id int64) int {
	if x.at != nil {
		if off := uint64(id) - uint64(x.min); off < uint64(len(x.at)) {
			return int(x.at[off]) - 1
		}
		return -1
	}
	if i, ok := slices.BinarySearch(x.ids, id); ok {
		return i
	}
	return -1
}

// digestGroups holds the stored users' row digests, hashed with a seed of
// its own and split into cache-sized groups (hashpart), ready to be
// matched against a file's rows. Split in the read-ahead, while the file
// is parsed; one table over a million digests, probed at random, was ~0.5
// s of the unchanged file's CPU, nearly all of it waiting for memory.
type digestGroups struct {
	hash    func(*digest) uint64
	bits    int
	grouped []hashpart.Entry
	ends    []int
}

// newDigestGroups hashes and groups the digests of the users that have
// one, with XXH3 seeded at random.
func newDigestGroups(users []storedUser) digestGroups {
	seed := rand.Uint64()
	return groupDigests(users, func(d *digest) uint64 { return xxh3.HashSeed(d[:], seed) })
}

// groupDigests is newDigestGroups with the hash given (tests give a weak
// one, to make digests that differ hash alike).
func groupDigests(users []storedUser, hash func(*digest) uint64) digestGroups {
	g := digestGroups{hash: hash}
	keys := make([]hashpart.Entry, 0, len(users))
	for k := range users {
		if users[k].hasDg {
			keys = append(keys, hashpart.Entry{Hash: hash(&users[k].dg), Pos: int32(k)})
		}
	}
	g.bits = hashpart.Bits(len(keys))
	g.grouped, g.ends = hashpart.Split(keys, g.bits)
	return g
}

// candidates returns, for each digest of digs, the place (in the users the
// groups were made of) of the one user whose digest hashes like it (64
// bits, seeded), or -1: for none, for digs[i] with skip(i), and when
// users share the hash (they are never a candidate). The groups are
// matched on every core.
//
// The caller compares a candidate's digest with the row's: the groups
// compare hashes only, since reading the digests here would be two reads
// at random places per row (the rows' and the users' digests), where the
// caller reads the user anyway. Two digests that hash alike are ~2^-64 per
// pair and cost nothing but speed: users sharing a hash, a candidate that
// the comparison turns down, each gets the full diff.
func (g digestGroups) candidates(digs []digest, skip func(i int) bool) []int32 {
	at := make([]int32, len(digs))
	keys := make([]hashpart.Entry, 0, len(digs))
	for i := range digs {
		at[i] = -1
		if !skip(i) {
			keys = append(keys, hashpart.Entry{Hash: g.hash(&digs[i]), Pos: int32(i)})
		}
	}
	rows, rowEnds := hashpart.Split(keys, g.bits)
	hashOnly := func(int32) bool { return true }
	pipeline.Parallel(len(g.ends), 8, func(lo, hi int) {
		var tab hashpart.Table
		// The group's users that share a hash, nearly always none: the
		// probe below asks this short list (a flag on each user was a read
		// at a random place per row, ~50 ms of a million).
		var dups []int32
		for grp := lo; grp < hi; grp++ {
			stored := hashpart.Group(g.grouped, g.ends, grp)
			tab.Reset(len(stored))
			dups = dups[:0]
			for _, e := range stored {
				if p := tab.Add(e, hashOnly); p != e.Pos {
					dups = append(dups, p)
				}
			}
			for _, e := range hashpart.Group(rows, rowEnds, grp) {
				if k := tab.Find(e, hashOnly); k >= 0 && (len(dups) == 0 || !slices.Contains(dups, k)) {
					at[e.Pos] = k
				}
			}
		}
	})
	return at
}
