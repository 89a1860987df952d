package diff

import (
	"encoding/binary"
	"math/bits"
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
	span := uint64(ids[len(ids)-1]) - uint64(ids[0]) + 1
	if span > uint64(len(ids))*denseSpan+4096 {
		return x
	}
	x.at = make([]int32, span)
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
// open addressing whose hash is the digest's first 8 bytes: XXH3
// spreads them evenly already, so nothing is hashed again, and a probe is
// one read of a 4-byte slot, where a Go map of 16-byte keys hashed each
// key and was ~0.4 s of CPU per million lookups and inserts.
type digestIndex struct {
	slot []int32 // place + 1 in the digests; 0: empty
	mask uint64
}

// newDigestIndex indexes the users' digests. When users share a digest,
// only the first is indexed, marked dupDg.
func newDigestIndex(users []storedUser) digestIndex {
	// At most half full: linear probes stay short.
	size := uint64(1) << bits.Len64(uint64(2*len(users)+1))
	x := digestIndex{slot: make([]int32, size), mask: size - 1}
	for k := range users {
		u := &users[k]
		if !u.hasDg {
			continue
		}
		for i := binary.LittleEndian.Uint64(u.dg[:8]) & x.mask; ; i = (i + 1) & x.mask {
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

// find returns the place of the user with digest d, or -1 for none or
// more than one.
func (x digestIndex) find(users []storedUser, d *digest) int {
	if len(x.slot) == 0 {
		return -1
	}
	for i := binary.LittleEndian.Uint64(d[:8]) & x.mask; ; i = (i + 1) & x.mask {
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
