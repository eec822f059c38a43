package main

import (
	"testing"
	"time"
)

func TestBusyTimeCountsUserNiceSystemIrqSoftirq(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  1000 20 300 99999 77 4 5 66 0 0\ncpu0 500 10 150 50000 40 2 3 33 0 0\n"
	got, err := busyTime(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1329 * time.Second / clockTicks; got != want {
		t.Fatalf("busy %v, want %v", got, want)
	}
}

func TestBusyTimeRefusesOtherText(t *testing.T) {
	for _, stat := range []string{"", "intr 1 2 3\n", "cpu 1 2 x 4 5 6 7\n"} {
		if _, err := busyTime(stat); err == nil {
			t.Errorf("busyTime(%q) gave no error", stat)
		}
	}
}

func TestMachineCPUReadsThisMachine(t *testing.T) {
	a, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	b, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a <= 0 || b < a {
		t.Fatalf("busy time %v then %v", a, b)
	}
}
