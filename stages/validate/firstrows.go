package validate

import "math/bits"

// firstRows keeps the first row of each value of an identity column: a
// hash table with open addressing over the values' 64-bit XXH3 hashes. A
// slot is one word, the hash's high half beside the row position, so a
// probe reads one word, and the values themselves are compared only when
// those halves are equal. It replaced a map[string]int32 sized for the
// file, whose allocation and inserts were ~0.45 s of CPU on a million
// rows (24-byte slots with a pointer the garbage collector scans: on these
// VMs the first touch of fresh memory is much of the cost, so the table's
// size matters as much as its probes).
type firstRows struct {
	slot []uint64 // hash>>32<<32 | position+1; 0: empty
	mask uint64
}

// newFirstRows sizes the table for n values, at most half full so that
// probes stay short.
func newFirstRows(n int) *firstRows {
	size := uint64(1) << bits.Len64(uint64(2*n+1))
	return &firstRows{slot: make([]uint64, size), mask: size - 1}
}

// add returns the first position recorded for the value at pos, whose
// hash is h: same(p) tells whether the value at an earlier position p
// with a like hash is that value. When there is none, it records pos and
// returns it.
func (t *firstRows) add(h uint64, pos int32, same func(p int32) bool) int32 {
	tag := h >> 32 << 32
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		sl := t.slot[i]
		switch p := int32(uint32(sl)) - 1; {
		case sl == 0:
			t.slot[i] = tag | uint64(uint32(pos+1))
			return pos
		case sl&^0xffffffff == tag && same(p):
			return p
		}
	}
}
