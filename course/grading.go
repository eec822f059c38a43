package course

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// gradingLoop runs the IAM challenge on each grading connection.
func (s *Server) gradingLoop() {
	var backoff time.Duration
	for {
		c, err := s.grading.Accept()
		if err != nil {
			if s.keepAccepting(err, &backoff) {
				continue
			}
			return
		}
		backoff = 0
		s.wg.Go(func() { s.grade(c) })
	}
}

// grade runs the IAM challenge on one connection.
func (s *Server) grade(c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	w := timedConn{c, s.cfg.IdleTimeout}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	line, err := readLine(r)
	if err != nil {
		return
	}
	verb, id, _ := strings.Cut(strings.TrimSpace(line), " ")
	if !strings.EqualFold(verb, "IAM") || !isDigits(id) || len(id) > 18 {
		fmt.Fprintf(w, "400 BAD_FORMAT: <%s>\n", strings.TrimSpace(line))
		return
	}
	if _, err := s.fileSize(s.cfg.GradingFile); err != nil {
		fmt.Fprintf(w, "%s : no challenge file on this server\n", id)
		return
	}
	ses := s.openSession(id)
	fmt.Fprintf(w, "%s_%s : What is the 4-byte XOR checksum, i.e., the sequential XOR of all 4-byte words, of the file with this name? Your testing time starts NOW!\n", id, s.cfg.GradingFile)
	answer := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(s.cfg.SessionTTL))
	if _, err := io.ReadFull(r, answer); err != nil || answer[4] != '\n' {
		return
	}
	want, err := s.checksum(Request{Session: id, Name: s.cfg.GradingFile})
	if err != nil {
		return
	}
	secs := time.Since(ses.start).Seconds()
	if [4]byte(answer[:4]) == want {
		fmt.Fprintf(w, "%s : Success! You have answered the challenge correctly in  %.3f seconds.\n", id, secs)
	} else {
		fmt.Fprintf(w, "%s : Failure! The checksum %x is wrong.\n", id, answer[:4])
	}
}

// checksum is the 4-byte XOR of a served file.
func (s *Server) checksum(r Request) ([4]byte, error) {
	size, err := s.fileSize(r.Name)
	if err != nil {
		return [4]byte{}, err
	}
	buf := make([]byte, size)
	if err := s.readAt(r, buf, 0); err != nil {
		return [4]byte{}, err
	}
	return Checksum(buf), nil
}

// Checksum is the sequential XOR of a file's 4-byte words: byte j is the
// XOR of every byte at an offset ≡ j (mod 4), trailing bytes included.
func Checksum(data []byte) [4]byte {
	var c [4]byte
	for i, b := range data {
		c[i%4] ^= b
	}
	return c
}

// maxSessions bounds the grading sessions kept at once: each costs a few
// dozen bytes, and a full table drops its oldest.
const maxSessions = 10_000

type session struct {
	key   [16]byte
	start time.Time
}

// openSession starts a grading session for id with a fresh key,
// replacing any earlier one of id; sessions older than SessionTTL go, and
// past maxSessions the oldest does.
func (s *Server) openSession(id string) *session {
	ses := &session{start: time.Now()}
	rand.Read(ses.key[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireSessionsLocked(ses.start)
	s.sessions[id] = ses
	s.sessionOrder = append(s.sessionOrder, sessionRef{id, ses})
	return ses
}

// session returns id's live session, or nil.
func (s *Server) session(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.sessions[id]
	if ses == nil || time.Since(ses.start) > s.cfg.SessionTTL {
		return nil
	}
	return ses
}

func (s *Server) expireSessionsLocked(now time.Time) {
	for len(s.sessionOrder) > 0 {
		first := s.sessionOrder[0]
		cur, live := s.sessions[first.id]
		if live && cur != first.ses {
			s.sessionOrder = s.sessionOrder[1:] // replaced by a later session of the same id
			continue
		}
		if live && now.Sub(first.ses.start) <= s.cfg.SessionTTL && len(s.sessions) < maxSessions {
			return
		}
		delete(s.sessions, first.id)
		s.sessionOrder = s.sessionOrder[1:]
	}
}

// sessionRef is one session in the order they were opened.
type sessionRef struct {
	id  string
	ses *session
}
