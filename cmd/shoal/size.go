package main

import (
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag of bytes (or bytes per second) that takes suffixes,
// as curl's --limit-rate and aria2c's sizes do: K, M, G and T, each a
// power of 1024, with or without "i" and "B" (5M, 10MiB, 1G, 512KB).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *byteSize) Type() string   { return "size" }

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// parseSize reads a size with an optional suffix.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "B")
	u = strings.TrimSuffix(u, "I")
	mult := int64(1)
	if u != "" {
		if k := strings.IndexByte("KMGT", u[len(u)-1]); k >= 0 {
			mult = int64(1) << (10 * (k + 1))
			u = u[:len(u)-1]
		}
	}
	if u == "" {
		return 0, fmt.Errorf("%q: not a size (try 5M, 10MiB, 1G or a number of bytes)", s)
	}
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q: not a size (try 5M, 10MiB, 1G or a number of bytes)", s)
	}
	return int64(f * float64(mult)), nil
}
