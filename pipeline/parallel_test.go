package pipeline

import (
	"sync/atomic"
	"testing"
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
