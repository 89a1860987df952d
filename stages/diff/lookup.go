package diff

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"slices"
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

// digestIndex finds a stored user by row digest. It is a hash table with
// open addressing over the digests' first 8 bytes, which XXH3 spreads
// evenly already: they are only mixed with a seed of the table's own, so
// that a tenant cannot write rows whose digests crowd one run of slots
// (the seed is random, the digests are not). A probe reads one 4-byte
// slot, where a Go map of 16-byte keys was ~0.4 s of CPU per million
// lookups and inserts.
type digestIndex struct {
	slot  []int32 // place + 1 in the users; 0: empty
	shift uint    // 64 - log2(len(slot))
	seed  uint64
}

// newDigestIndex indexes the users' digests. When users share a digest,
// only the first is indexed, marked dupDg.
func newDigestIndex(users []storedUser) digestIndex {
	// At most half full: linear probes stay short.
	bitsN := bits.Len64(uint64(2*len(users) + 1))
	x := digestIndex{slot: make([]int32, 1<<bitsN), shift: uint(64 - bitsN), seed: rand.Uint64()}
	mask := uint64(len(x.slot) - 1)
	for k := range users {
		u := &users[k]
		if !u.hasDg {
			continue
		}
		for i := x.home(&u.dg); ; i = (i + 1) & mask {
			s := x.slot[i]
			if s == 0 {
				x.slot[i] = int32(k + 1)
				break
			}
			if users[s-1].dg == u.dg {
				users[s-1].dupDg = true
				break
			}
		}
	}
	return x
}

// home is the slot where the probe for d starts: the top bits of the
// seeded key times an odd constant (Fibonacci hashing).
func (x digestIndex) home(d *digest) uint64 {
	return ((binary.LittleEndian.Uint64(d[:8]) ^ x.seed) * 0x9e3779b97f4a7c15) >> x.shift
}

// find returns the place of the user with digest d, or -1 for none or
// more than one.
func (x digestIndex) find(users []storedUser, d *digest) int {
	if len(x.slot) == 0 {
		return -1
	}
	mask := uint64(len(x.slot) - 1)
	for i := x.home(d); ; i = (i + 1) & mask {
		s := x.slot[i]
		if s == 0 {
			return -1
		}
		if u := &users[s-1]; u.dg == *d {
			if u.dupDg {
				return -1
			}
			return int(s - 1)
		}
	}
}
