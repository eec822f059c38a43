package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a command starts ends with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
