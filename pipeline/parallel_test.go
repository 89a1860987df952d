package pipeline

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestParallelCoversEveryIndexOnce: the ranges handed out cover [0, n)
// exactly once, whatever n and the minimum range length.
func TestParallelCoversEveryIndexOnce(t *testing.T) {
	for _, c := range []struct{ n, minLen int }{{0, 1}, {1, 1}, {7, 1}, {100, 1000}, {1 << 16, 1 << 14}, {100003, 1}} {
		seen := make([]atomic.Int32, c.n)
		Parallel(c.n, c.minLen, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			if got := seen[i].Load(); got != 1 {
				t.Fatalf("n=%d minLen=%d: index %d handled %d times", c.n, c.minLen, i, got)
			}
		}
	}
}

// TestParallelHandsOutRangesAsCoresComeFree: while one range is slow (a
// long batch, a core taken by a neighbour), the other core goes on through
// all the rest. Split into one fixed share per core, the ranges after the
// slow one would wait for it: here, for ever.
func TestParallelHandsOutRangesAsCoresComeFree(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	const n = 8
	var done atomic.Int32
	waited := false
	Parallel(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if i == 0 { // the slow one: done when every other index is
				deadline := time.Now().Add(5 * time.Second)
				for done.Load() < n-1 && !waited {
					waited = time.Now().After(deadline)
					time.Sleep(time.Millisecond)
				}
			}
			done.Add(1)
		}
	})
	if waited {
		t.Fatalf("the other ranges did not go on while the first was slow: %d of %d done", done.Load(), n)
	}
}

// TestParallelRaisesAWorkersPanicInTheCaller: a panic on another core
// reaches the caller, where the runner recovers it as a failed file,
// instead of killing the process.
func TestParallelRaisesAWorkersPanicInTheCaller(t *testing.T) {
	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the worker's panic", p)
		}
	}()
	Parallel(1<<20, 1, func(lo, hi int) {
		if hi == 1<<20 { // the last range: another goroutine when there are two cores
			panic("boom")
		}
	})
	t.Fatal("Parallel returned after a worker panicked")
}

// TestEachRunsEveryJobOnce: every job runs exactly once, whatever the
// number of jobs against the cores.
func TestEachRunsEveryJobOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 5} {
		runs := make([]atomic.Int32, n)
		var jobs []func()
		for i := range n {
			jobs = append(jobs, func() { runs[i].Add(1) })
		}
		Each(jobs...)
		for i := range runs {
			if got := runs[i].Load(); got != 1 {
				t.Fatalf("%d jobs: job %d ran %d times", n, i, got)
			}
		}
	}
}
