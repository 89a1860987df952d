package pipeline

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Parallel calls fn over [0, n) in ranges, each at least minLen long, on
// every core, and waits for them all: how a stage spreads a large file's
// rows or batches over the cores. The ranges are handed out as the cores
// come free rather than one fixed share per core, so that a short last
// batch (100k rows are six 16,384-row batches and a 1,696-row one) or a
// neighbour on the VM does not leave a core idle while the other works
// through the rest. fn may be called many times, for ranges in any order;
// it must only write what its own range owns. A panic in any range is
// raised again in the caller, where the runner turns it into a failed file
// instead of a dead process.
func Parallel(n, minLen int, fn func(lo, hi int)) {
	workers := max(1, min(runtime.GOMAXPROCS(0), n/max(1, minLen)))
	if workers == 1 {
		fn(0, n)
		return
	}
	// Four ranges a core: enough for the cores to even out, few enough
	// that a range's set-up (a map, a buffer) stays small beside its work.
	chunks := min(n/max(1, minLen), 4*workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var crash any
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					once.Do(func() { crash = p })
					next.Store(int64(chunks)) // the others stop at their next range
				}
			}()
			for c := int(next.Add(1) - 1); c < chunks; c = int(next.Add(1) - 1) {
				fn(n*c/chunks, n*(c+1)/chunks)
			}
		}()
	}
	wg.Wait()
	if crash != nil {
		panic(crash)
	}
}

// Each runs the independent jobs fns on every core (each job on one) and
// waits for them all; a panic is raised again in the caller, as Parallel.
func Each(fns ...func()) {
	Parallel(len(fns), 1, func(lo, hi int) {
		for _, fn := range fns[lo:hi] {
			fn()
		}
	})
}
