package course

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		line string
		want Request
	}{
		{"GET redsox.jpg.torrent", Request{Name: "redsox.jpg", Kind: KindTorrent}},
		{"get redsox.jpg:0\r", Request{Name: "redsox.jpg", Kind: KindBlock, Block: 0}},
		{"  GET redsox.jpg:80  ", Request{Name: "redsox.jpg", Kind: KindBlock, Block: 80}},
		{"GET redsox.jpg:*", Request{Name: "redsox.jpg", Kind: KindAny}},
		{"GETHDR test.jpg:3", Request{HeaderOnly: true, Name: "test.jpg", Kind: KindBlock, Block: 3}},
		{"GET test.jpg", Request{Name: "test.jpg", Kind: KindWhole}},
		{"GET 1234_redsox.jpg:5", Request{Session: "1234", Name: "redsox.jpg", Kind: KindBlock, Block: 5}},
		{"GET 1234_redsox.jpg.torrent", Request{Session: "1234", Name: "redsox.jpg", Kind: KindTorrent}},
	}
	for _, c := range cases {
		got, err := ParseRequest(c.line)
		if err != nil || got != c.want {
			t.Errorf("ParseRequest(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
		back, err := ParseRequest(got.String())
		if err != nil || back != got {
			t.Errorf("round trip of %q: %+v, %v", c.line, back, err)
		}
	}
	for _, bad := range []string{"", "GET", "PUT x:1", "GET x:-1", "GET x:1a", "GET :3", "GET ../etc/passwd:1", "GET a b:1", "GET x:99999999999"} {
		if _, err := ParseRequest(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseRequest(%q) = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestParseTrackerReply(t *testing.T) {
	ref := "NUM_BLOCKS: 81\nFILE_SIZE: 805975\nIP1: localhost/127.0.0.1\nPORT1: 9245\nIP2: 127.0.0.1\nPORT2: 3564\n"
	tr, err := ParseTrackerReply([]byte(ref))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9245"), netip.MustParseAddrPort("127.0.0.1:3564")}
	if tr.Size != 805975 || tr.NumBlocks != 81 || len(tr.Peers) != 2 || tr.Peers[0] != want[0] || tr.Peers[1] != want[1] {
		t.Fatalf("parsed %+v", tr)
	}
	// Our own format uses bare IPs, as existing clients split on ": ".
	for _, line := range strings.Split(strings.TrimSpace(string(tr.Format())), "\n") {
		if k, v, ok := strings.Cut(line, ": "); !ok || strings.Contains(v, "/") || k == "" {
			t.Errorf("formatted line %q", line)
		}
	}
	if _, err := ParseTrackerReply([]byte("400 BAD_FORMAT\n")); !errors.Is(err, ErrBadFormat) {
		t.Errorf("400 reply: %v", err)
	}
	for _, bad := range []string{"FILE_SIZE: x\n", "NUM_BLOCKS 3\n", "FILE_SIZE: 10\nIP1: nothost\nPORT1: 5\n", "FILE_SIZE: 10\nIP1: 1.2.3.4\nPORT1: 99999\n"} {
		if _, err := ParseTrackerReply([]byte(bad)); err == nil {
			t.Errorf("ParseTrackerReply(%q) accepted", bad)
		}
	}
}

func TestReadHeaderAsAStream(t *testing.T) {
	full := string(FormatHeader(Header{Offset: 20000, Length: 10000})) + "BODY"
	// Any split point: the reader sees bytes, not segments.
	for cut := 1; cut < len(full); cut++ {
		r := bufio.NewReaderSize(&slowReader{parts: []string{full[:cut], full[cut:]}}, 16)
		h, err := ReadHeader(r)
		if err != nil || h.Offset != 20000 || h.Length != 10000 {
			t.Fatalf("cut at %d: %+v, %v", cut, h, err)
		}
		rest := make([]byte, 4)
		if _, err := io.ReadFull(r, rest); err != nil || string(rest) != "BODY" {
			t.Fatalf("cut at %d: body %q, %v", cut, rest, err)
		}
	}
	_, err := ReadHeader(bufio.NewReader(strings.NewReader("400 BAD_FORMAT: <GET x:9>\n")))
	if !errors.Is(err, ErrBadFormat) {
		t.Errorf("400: %v", err)
	}
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader("200 OK\nBODY_BYTE_LENGTH: 5\n\n"))); !errors.Is(err, ErrSyntax) {
		t.Errorf("header without offset: %v", err)
	}
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader(strings.Repeat("x", 5000)))); !errors.Is(err, ErrSyntax) {
		t.Errorf("endless line: %v", err)
	}
}

// slowReader hands out its parts one Read at a time.
type slowReader struct{ parts []string }

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.parts) == 0 {
		return 0, errors.New("EOF")
	}
	n := copy(p, s.parts[0])
	if n < len(s.parts[0]) {
		s.parts[0] = s.parts[0][n:]
	} else {
		s.parts = s.parts[1:]
	}
	return n, nil
}

func TestChecksum(t *testing.T) {
	got := Checksum([]byte{1, 2, 3, 4, 5, 6, 7, 8, 0xFF})
	if got != [4]byte{1 ^ 5 ^ 0xFF, 2 ^ 6, 3 ^ 7, 4 ^ 8} {
		t.Fatalf("checksum %x", got)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"GET redsox.jpg.torrent\n", "GET redsox.jpg:80", "GETHDR 1234_redsox.jpg:*", "GET test.jpg", "get x:007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequest(s)
		if err != nil {
			return
		}
		if r.Block < 0 || r.Name == "" || strings.ContainsAny(r.Name, "/\\ ") {
			t.Fatalf("accepted %q as %+v", s, r)
		}
		back, err := ParseRequest(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q: %+v, %v", s, back, err)
		}
	})
}

func FuzzParseTrackerReply(f *testing.F) {
	f.Add([]byte("NUM_BLOCKS: 81\nFILE_SIZE: 805975\nIP1: host/127.0.0.1\nPORT1: 9245\nIP2: 127.0.0.1\nPORT2: 3564\n"))
	f.Add([]byte("400 BAD_FORMAT\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseTrackerReply(b)
		if err != nil {
			return
		}
		if tr.Size < 0 {
			t.Fatalf("negative size from %q", b)
		}
		for _, p := range tr.Peers {
			if !p.IsValid() || p.Port() == 0 {
				t.Fatalf("bad peer %v from %q", p, b)
			}
		}
	})
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("200 OK\nBODY_BYTE_OFFSET_IN_FILE: 0\nBODY_BYTE_LENGTH: 10000\n\n"))
	f.Add([]byte("400 BAD_FORMAT: <GET x>\n"))
	f.Add([]byte("200 OK\r\nBODY_BYTE_OFFSET_IN_FILE: 10000\r\nBODY_BYTE_LENGTH: 5975\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bufio.NewReader(strings.NewReader(string(b))))
		if err == nil && (h.Offset < 0 || h.Length < 0) {
			t.Fatalf("negative header from %q", b)
		}
	})
}
