package main

import (
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// startProfiles starts the profiles the hidden --cpuprofile and
// --memprofile flags ask for; stop writes them. On an error nothing is
// left running.
//
// The heap profile is written twice: at the end with every allocation of
// the run (pprof's alloc_space), and as mem.peak each time the live heap
// after a GC reaches a new high (10% over the last written), since what a
// long-lived registry holds at its peak is gone by the time it stops.
func startProfiles(cpu, mem string) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range stops {
			f()
		}
	}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if mem != "" {
		f, err := os.Create(mem)
		if err != nil {
			stop()
			return nil, fmt.Errorf("--memprofile: %w", err)
		}
		done := make(chan struct{})
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			watchHeapPeak(mem+".peak", done)
		}()
		stops = append(stops, func() {
			close(done)
			<-ended
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		})
	}
	return stop, nil
}

// watchHeapPeak writes the in-use heap profile to path whenever the heap
// live after a GC is 10% over the last one written, until done closes.
func watchHeapPeak(path string, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}} // as of the last GC, as the profile
	var written uint64
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		metrics.Read(live)
		if v := live[0].Value.Uint64(); v < written+written/10 {
			continue
		} else {
			written = v
		}
		if f, err := os.Create(path); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
}
