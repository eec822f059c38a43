package server

import (
	"fmt"
	"sync"
)

// uploadSlots shares a peer's uploads (or its WatchHave streams) fairly: at most total GetChunks
// calls at once over all clients, perClient from one client IP and
// perConn over one connection, so that one client opening streams on many
// connections and never reading cannot take every slot. A negative cap is
// no cap.
type uploadSlots struct {
	total, perClient, perConn int

	mu       sync.Mutex
	used     int            // guarded by mu
	byClient map[string]int // slots per client IP; guarded by mu
	byConn   map[string]int // slots per connection (remote address); guarded by mu
}

func newUploadSlots(total, perClient, perConn int) *uploadSlots {
	return &uploadSlots{total: total, perClient: perClient, perConn: perConn, byClient: map[string]int{}, byConn: map[string]int{}}
}

// acquire takes a slot for a call of client over conn; the returned
// function gives it back and may be called more than once. A cap reached
// is errBusy, which clients back off from.
func (u *uploadSlots) acquire(client, conn string) (func(), error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.total >= 0 && u.used >= u.total:
		return nil, fmt.Errorf("%w: %d uploads under way", errBusy, u.used)
	case u.perClient >= 0 && u.byClient[client] >= u.perClient:
		return nil, fmt.Errorf("%w: %d uploads to your address under way, at most %d", errBusy, u.byClient[client], u.perClient)
	case u.perConn >= 0 && u.byConn[conn] >= u.perConn:
		return nil, fmt.Errorf("%w: %d uploads on your connection under way, at most %d", errBusy, u.byConn[conn], u.perConn)
	}
	u.used++
	u.byClient[client]++
	u.byConn[conn]++
	var once sync.Once
	return func() { once.Do(func() { u.release(client, conn) }) }, nil
}

func (u *uploadSlots) release(client, conn string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.used--
	if u.byClient[client]--; u.byClient[client] <= 0 {
		delete(u.byClient, client)
	}
	if u.byConn[conn]--; u.byConn[conn] <= 0 {
		delete(u.byConn, conn)
	}
}
