package server

import (
	"errors"
	"fmt"
	"testing"
)

func TestUploadSlotsCaps(t *testing.T) {
	u := newUploadSlots(10, 4, 2)
	var releases []func()
	take := func(client, conn string) error {
		r, err := u.acquire(client, conn)
		if err == nil {
			releases = append(releases, r)
		}
		return err
	}
	for k := range 2 {
		if err := take("a", "a:1"); err != nil {
			t.Fatalf("slot %d: %v", k, err)
		}
	}
	if err := take("a", "a:1"); !errors.Is(err, errBusy) {
		t.Fatalf("third on one connection: %v", err)
	}
	for k := range 2 {
		if err := take("a", "a:2"); err != nil {
			t.Fatalf("second connection, slot %d: %v", k, err)
		}
	}
	if err := take("a", "a:3"); !errors.Is(err, errBusy) {
		t.Fatalf("fifth from one client: %v", err)
	}
	for k := range 6 {
		if err := take(fmt.Sprint("c", k), "x"+fmt.Sprint(k)); err != nil {
			t.Fatalf("other client %d: %v", k, err)
		}
	}
	if err := take("z", "z:1"); !errors.Is(err, errBusy) {
		t.Fatalf("eleventh overall: %v", err)
	}
	releases[0]()
	releases[0]() // twice is once
	if err := take("a", "a:1"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if err := take("y", "y:1"); !errors.Is(err, errBusy) {
		t.Fatalf("a double release freed two slots: %v", err)
	}
}
