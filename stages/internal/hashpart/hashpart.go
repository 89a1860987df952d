// Package hashpart finds equal keys among a million or more by their
// 64-bit hashes, one cache-sized group of hashes at a time.
//
// One hash table over a million keys is tens of megabytes, and each insert
// or probe lands on a random page of it: on the 2-core reference machine,
// a virtual machine where a TLB miss walks two page tables, that was ~200
// ns per key, nearly all of it waiting for memory (0.45 s of validate's
// CPU on a million-row file, 0.42 s of diff's on the unchanged one). Here
// the keys are first split by the top bits of their hashes (a stable
// counting sort: two sequential passes), then each group goes through a
// small table that stays in the core's cache. Keys that are equal have
// equal hashes, so they always meet in one group.
//
// The hashes must be seeded (or mixed with a seed) per process, as Go's
// maps are: keys come from customers' files, and a file whose keys were
// searched offline to crowd one group or one run of slots would otherwise
// turn each probe into a scan.
package hashpart

import "math/bits"

// Entry is one key: its hash and its position (a row, a user), which is
// what the tables return.
type Entry struct {
	Hash uint64
	Pos  int32
}

// groupSize is the number of entries a group aims at: groups hold up to
// about twice as many, whose table (at least twice their entries, a power
// of two) is then 8,192 16-byte slots, 128 KiB, within a core's L2 cache.
// maxBits bounds the groups to 4,096, few enough that the split's writes
// go to as many pages as the TLB holds.
const (
	groupSize = 2048
	maxBits   = 12
)

// Bits returns how many top bits of the hashes split n entries into groups
// of about groupSize. Two sets of keys that are to be matched must be
// split with the same bits.
func Bits(n int) int {
	b := 0
	for b < maxBits && n>>b > groupSize {
		b++
	}
	return b
}

// Split returns the entries ordered by the top b bits of their hashes,
// keeping their order within each group, and ends[g], the end of group g
// in the result (group g starts at ends[g-1], or 0). The entries are not
// changed.
func Split(entries []Entry, b int) (grouped []Entry, ends []int) {
	if b <= 0 {
		return entries, []int{len(entries)}
	}
	shift := uint(64 - b)
	next := make([]int, 1<<b)
	for _, e := range entries {
		next[e.Hash>>shift]++
	}
	ends = make([]int, len(next))
	at := 0
	for g, n := range next {
		next[g] = at
		at += n
		ends[g] = at
	}
	grouped = make([]Entry, len(entries))
	for _, e := range entries {
		g := e.Hash >> shift
		grouped[next[g]] = e
		next[g]++
	}
	return grouped, ends
}

// Group returns group g of a split: the grouped entries from ends[g-1]
// (or 0) to ends[g].
func Group(grouped []Entry, ends []int, g int) []Entry {
	from := 0
	if g > 0 {
		from = ends[g-1]
	}
	return grouped[from:ends[g]]
}

// Table is a hash table with open addressing over one group's entries,
// reused from group to group. Its slots are taken from the hashes' low
// bits: the top ones are those the group shares.
type Table struct {
	slot []Entry // Pos+1 in Pos; 0: empty
	mask uint64
}

// Reset empties the table and sizes it for n entries, at most half full,
// so that a probe always ends and is short.
func (t *Table) Reset(n int) {
	size := 1 << bits.Len(uint(2*n+1))
	if cap(t.slot) >= size {
		t.slot = t.slot[:size]
		clear(t.slot)
	} else {
		t.slot = make([]Entry, size)
	}
	t.mask = uint64(size - 1)
}

// Add returns the position of the entry added before with an equal key:
// same(p) tells whether the key at position p is e's, and is asked only
// of entries whose hash is e's. When there is none, it adds e and returns
// e.Pos. At most n entries (as given to Reset) may be added.
func (t *Table) Add(e Entry, same func(p int32) bool) int32 {
	for i := e.Hash & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slot[i]
		switch {
		case s.Pos == 0:
			*s = Entry{e.Hash, e.Pos + 1}
			return e.Pos
		case s.Hash == e.Hash && same(s.Pos-1):
			return s.Pos - 1
		}
	}
}

// Find returns the position of the entry added with e's key (same as in
// Add), or -1.
func (t *Table) Find(e Entry, same func(p int32) bool) int32 {
	if len(t.slot) == 0 {
		return -1
	}
	for i := e.Hash & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slot[i]
		switch {
		case s.Pos == 0:
			return -1
		case s.Hash == e.Hash && same(s.Pos-1):
			return s.Pos - 1
		}
	}
}
