package course

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// BlockSize is the protocol's block length in bytes.
const BlockSize = 10000

// maxLine is the longest request line a server reads.
const maxLine = 1024

// Errors of the protocol.
var (
	ErrBadFormat = errors.New("400 BAD_FORMAT")
	ErrSyntax    = errors.New("malformed protocol text")
)

// Kind is what a request asks for.
type Kind int

// Request kinds.
const (
	KindWhole   Kind = iota + 1 // GET name: the whole file
	KindBlock                   // GET name:n
	KindAny                     // GET name:*: a random block
	KindTorrent                 // GET name.torrent: tracker query
)

// Request is one request line.
type Request struct {
	HeaderOnly bool   // GETHDR
	Session    string // digits of a "DIGITS_" prefix: a grading session's copy
	Name       string // file name, without prefix or suffix
	Kind       Kind
	Block      int // for KindBlock
}

// ParseRequest reads one request line (without its newline).
func ParseRequest(line string) (Request, error) {
	var r Request
	line = strings.TrimSpace(line)
	verb, rest, ok := strings.Cut(line, " ")
	if !ok {
		return r, fmt.Errorf("%w: no verb and name in %q", ErrSyntax, line)
	}
	switch strings.ToUpper(verb) {
	case "GET":
	case "GETHDR":
		r.HeaderOnly = true
	default:
		return r, fmt.Errorf("%w: unknown verb %q", ErrSyntax, verb)
	}
	rest = strings.TrimSpace(rest)
	if i := strings.IndexByte(rest, '_'); i > 0 && isDigits(rest[:i]) {
		r.Session, rest = rest[:i], rest[i+1:]
	}
	switch {
	case strings.HasSuffix(strings.ToLower(rest), ".torrent"):
		r.Kind, r.Name = KindTorrent, rest[:len(rest)-len(".torrent")]
	case strings.Contains(rest, ":"):
		i := strings.LastIndexByte(rest, ':')
		r.Name = rest[:i]
		switch n := rest[i+1:]; {
		case n == "*":
			r.Kind = KindAny
		case isDigits(n) && len(n) <= 9:
			r.Kind = KindBlock
			r.Block, _ = strconv.Atoi(n)
		default:
			return r, fmt.Errorf("%w: block %q is not a number", ErrSyntax, n)
		}
	default:
		r.Kind, r.Name = KindWhole, rest
	}
	if r.Name == "" || strings.ContainsAny(r.Name, " \t/\\") || r.Name == "." || r.Name == ".." {
		return r, fmt.Errorf("%w: bad file name %q", ErrSyntax, r.Name)
	}
	return r, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// String formats the request as a line without its newline.
func (r Request) String() string {
	verb := "GET"
	if r.HeaderOnly {
		verb = "GETHDR"
	}
	name := r.Name
	if r.Session != "" {
		name = r.Session + "_" + name
	}
	switch r.Kind {
	case KindBlock:
		return fmt.Sprintf("%s %s:%d", verb, name, r.Block)
	case KindAny:
		return verb + " " + name + ":*"
	case KindTorrent:
		return verb + " " + name + ".torrent"
	default:
		return verb + " " + name
	}
}

// FullName is the name with its session prefix.
func (r Request) FullName() string {
	if r.Session != "" {
		return r.Session + "_" + r.Name
	}
	return r.Name
}

// TrackerReply is the tracker's answer to a .torrent query.
type TrackerReply struct {
	NumBlocks int
	Size      int64
	Peers     []netip.AddrPort
}

// ParseTrackerReply reads a tracker reply. Addresses may be bare IPs or
// Java's "hostname/1.2.3.4"; the text after the last '/' is used.
func ParseTrackerReply(b []byte) (TrackerReply, error) {
	var tr TrackerReply
	if bytes.HasPrefix(b, []byte("400")) {
		return tr, ErrBadFormat
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return tr, fmt.Errorf("%w: tracker line %q", ErrSyntax, line)
		}
		fields[strings.ToUpper(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	size, err := strconv.ParseInt(fields["FILE_SIZE"], 10, 64)
	if err != nil || size < 0 || size > 1<<40 {
		return tr, fmt.Errorf("%w: FILE_SIZE %q", ErrSyntax, fields["FILE_SIZE"])
	}
	tr.Size = size
	tr.NumBlocks, _ = strconv.Atoi(fields["NUM_BLOCKS"])
	for i := 1; i <= 64; i++ {
		ip, okIP := fields[fmt.Sprintf("IP%d", i)]
		port, okPort := fields[fmt.Sprintf("PORT%d", i)]
		if !okIP || !okPort {
			break
		}
		if j := strings.LastIndexByte(ip, '/'); j >= 0 {
			ip = ip[j+1:]
		}
		addr, err := netip.ParseAddr(ip)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || p == 0 {
			return tr, fmt.Errorf("%w: peer %q:%q", ErrSyntax, ip, port)
		}
		tr.Peers = append(tr.Peers, netip.AddrPortFrom(addr.Unmap(), uint16(p)))
	}
	return tr, nil
}

// Format writes the reply as the reference server does, with bare IPs.
func (tr TrackerReply) Format() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "NUM_BLOCKS: %d\nFILE_SIZE: %d\n", tr.NumBlocks, tr.Size)
	for i, p := range tr.Peers {
		fmt.Fprintf(&b, "IP%d: %s\nPORT%d: %d\n", i+1, p.Addr(), i+1, p.Port())
	}
	return []byte(b.String())
}

// Header is a peer's reply header.
type Header struct {
	Offset int64 // BODY_BYTE_OFFSET_IN_FILE
	Length int64 // BODY_BYTE_LENGTH
}

// FormatHeader writes a 200 OK header.
func FormatHeader(h Header) []byte {
	return fmt.Appendf(nil, "200 OK\nBODY_BYTE_OFFSET_IN_FILE: %d\nBODY_BYTE_LENGTH: %d\n\n", h.Offset, h.Length)
}

// ReadHeader reads a reply header from a byte stream, whatever its
// segmentation. A 400 reply is ErrBadFormat.
func ReadHeader(r *bufio.Reader) (Header, error) {
	var h Header
	status, err := readLine(r)
	if err != nil {
		return h, err
	}
	if strings.HasPrefix(status, "400") {
		return h, fmt.Errorf("%w: %s", ErrBadFormat, status)
	}
	if !strings.HasPrefix(status, "200") {
		return h, fmt.Errorf("%w: status line %q", ErrSyntax, status)
	}
	seenOff, seenLen := false, false
	for {
		line, err := readLine(r)
		if err != nil {
			return h, err
		}
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return h, fmt.Errorf("%w: header line %q", ErrSyntax, line)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return h, fmt.Errorf("%w: header value %q", ErrSyntax, line)
		}
		switch strings.ToUpper(strings.TrimSpace(k)) {
		case "BODY_BYTE_OFFSET_IN_FILE":
			h.Offset, seenOff = n, true
		case "BODY_BYTE_LENGTH":
			h.Length, seenLen = n, true
		}
	}
	if !seenOff || !seenLen {
		return h, fmt.Errorf("%w: header without offset or length", ErrSyntax)
	}
	return h, nil
}

// readLine reads one line of at most maxLine bytes, without "\n" or "\r\n".
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if c == '\n' {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
		if len(b) >= maxLine {
			return "", fmt.Errorf("%w: line over %d bytes", ErrSyntax, maxLine)
		}
		b = append(b, c)
	}
}

// NumBlocks is the number of blocks of a file of size bytes.
func NumBlocks(size int64) int { return int((size + BlockSize - 1) / BlockSize) }
