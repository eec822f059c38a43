package course

import (
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// trackerLoop answers the tracker's UDP queries: two random advertised
// ports per answer, at most one answer per IP every 2 s (scaled), silence
// for the rest, as the reference does.
func (s *Server) trackerLoop() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.tracker.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		ip := from.Addr().Unmap()
		_, size, perr := s.validate(strings.TrimRight(string(buf[:n]), "\r\n"), true)
		if perr != nil {
			s.tracker.WriteToUDPAddrPort([]byte("400 BAD_FORMAT\n"), from)
			continue
		}
		now := time.Now()
		s.mu.Lock()
		last, seen := s.lastReply[ip]
		limited := seen && now.Sub(last) <= s.scaled(2000*time.Millisecond)
		var peers []netip.AddrPort
		if !limited {
			for _, k := range mrand.Perm(len(s.advertised))[:min(2, len(s.advertised))] {
				peers = append(peers, netip.AddrPortFrom(s.ip, s.advertised[k]))
			}
			s.lastReply[ip] = now
			if len(s.lastReply) > 10_000 {
				clear(s.lastReply)
			}
		}
		s.mu.Unlock()
		if limited || mrand.Float64() < s.cfg.DropTrackerReplies {
			continue // silently, as the reference does (and as UDP may)
		}
		reply := TrackerReply{NumBlocks: NumBlocks(size), Size: size, Peers: peers}
		s.tracker.WriteToUDPAddrPort(reply.Format(), from)
	}
}
