// Package harness holds helpers shared by shoal's tests and benchmarks:
// measuring the heap while something runs, and part files that act on the
// test after a number of writes.
package harness

import (
	"os"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// HeapPeak samples the live heap every 5 ms until the returned function is
// called, which returns the highest value seen in bytes.
func HeapPeak() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var (
		peak uint64
		wg   sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// AfterWrites is a part file that calls Then once, right after its After-th
// write: a download cancelled, scraped or left at a known point.
type AfterWrites struct {
	*os.File
	After int32
	Then  func()
	n     atomic.Int32
}

// OpenAfterWrites opens path as a download's part file would.
func OpenAfterWrites(path string, after int32, then func()) (*AfterWrites, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &AfterWrites{File: f, After: after, Then: then}, nil
}

// WriteAt writes, then calls Then if this was the After-th write.
func (a *AfterWrites) WriteAt(p []byte, off int64) (int, error) {
	n, err := a.File.WriteAt(p, off)
	if a.n.Add(1) == a.After {
		a.Then()
	}
	return n, err
}
