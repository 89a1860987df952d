package pipeline

import (
	"runtime"
	"sync"
)

// Parallel calls fn over [0, n) split into one range per core, each at
// least minLen long, and waits for them all: how a stage spreads a large
// file's rows or batches over every core. fn must only write what its own
// range owns. A panic in any range is raised again in the caller, where
// the runner turns it into a failed file instead of a dead process.
func Parallel(n, minLen int, fn func(lo, hi int)) {
	workers := max(1, min(runtime.GOMAXPROCS(0), n/max(1, minLen)))
	if workers == 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	var once sync.Once
	var crash any
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					once.Do(func() { crash = p })
				}
			}()
			fn(lo, hi)
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
