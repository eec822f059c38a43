package chunkstore

import "fmt"

// PackHave packs a have-set (one bool per chunk) into a bitmap: chunk i
// is bit i%8 of byte i/8. It is the wire form of WatchHave's bitmap.
func PackHave(have []bool) []byte {
	b := make([]byte, (len(have)+7)/8)
	for i, h := range have {
		if h {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// UnpackHave reads a bitmap PackHave wrote for n chunks. A bitmap of
// another length, or with bits set past chunk n-1, is refused.
func UnpackHave(b []byte, n int) ([]bool, error) {
	if n < 0 || len(b) != (n+7)/8 {
		return nil, fmt.Errorf("have bitmap of %d bytes for %d chunks", len(b), n)
	}
	if n%8 != 0 && b[len(b)-1]>>(n%8) != 0 {
		return nil, fmt.Errorf("have bitmap marks chunks past the last of %d", n)
	}
	have := make([]bool, n)
	for i := range have {
		have[i] = b[i/8]&(1<<(i%8)) != 0
	}
	return have, nil
}
