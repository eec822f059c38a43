package course

import (
	"errors"
	"math"
	"net/netip"
	"time"
)

// ports models a course swarm's peer ports: which the tracker named, and
// how fast each has served. It does no I/O and keeps no lock; the Tracker
// that owns one guards it with its mutex.
type ports struct {
	known []netip.AddrPort                 // every port heard of, first seen first
	seen  map[netip.AddrPort]bool          // the ports in known
	speed map[netip.AddrPort]time.Duration // recent block time per port
	timed map[netip.AddrPort]bool          // ports with a whole block timed
}

func newPorts() *ports {
	return &ports{seen: map[netip.AddrPort]bool{}, speed: map[netip.AddrPort]time.Duration{}, timed: map[netip.AddrPort]bool{}}
}

// add records ports the tracker named, each once.
func (m *ports) add(ps ...netip.AddrPort) {
	for _, p := range ps {
		if !m.seen[p] {
			m.seen[p] = true
			m.known = append(m.known, p)
		}
	}
}

// speedOf is the block time recorded for a, and whether there is one.
func (m *ports) speedOf(a netip.AddrPort) (time.Duration, bool) {
	d, ok := m.speed[a]
	return d, ok
}

// event is the reference server's unit of pacing: it writes a block in
// 1000-byte events with a pause between them.
const event = 1000

// untriedGuess is the block time assumed of a port never measured. The
// reference's ports take 1.0 to 3.0 s per block, 2.0 s on average; a guess
// below the average makes the client explore while the ports it knows are
// mediocre, and stay once it has found a fast one.
const untriedGuess = 1500 * time.Millisecond

// probingGuess is the block time assumed of a port whose first block is
// under way and not yet estimated: the average, so further connections
// spread over other ports and the client learns more of them at once.
const probingGuess = 2000 * time.Millisecond

// observe records a block's time on a port: the first replaces any early
// estimate, later ones make a moving average.
func (m *ports) observe(a netip.AddrPort, d time.Duration) {
	if old, ok := m.speed[a]; ok && m.timed[a] {
		d = (old + d) / 2
	}
	m.speed[a] = d
	m.timed[a] = true
}

// deadPort is the block time recorded for a port that refused a
// connection (withdrawn by churn): it is never chosen again.
const deadPort = time.Hour

// refused records that a port did not accept a connection.
func (m *ports) refused(a netip.AddrPort) {
	m.speed[a], m.timed[a] = deadPort, true
}

// observeEarly records a block time estimated from a block's first
// events, for a port with no block timed yet.
func (m *ports) observeEarly(a netip.AddrPort, d time.Duration) {
	if !m.timed[a] {
		m.speed[a] = d
	}
}

// ErrNoPorts means the tracker has named no usable port yet.
var ErrNoPorts = errors.New("no usable port known")

// eventsPerBlock is how many paced events a block is: a port with pause d
// takes about 1 s + eventsPerBlock·d per block.
const eventsPerBlock = BlockSize / event

// observeStream records a port's pace measured by a whole-file stream, as
// the block time it implies. It is measured over many events, so it
// replaces any estimate.
func (m *ports) observeStream(a netip.AddrPort, pace time.Duration) {
	m.speed[a] = time.Second + eventsPerBlock*pace
	m.timed[a] = true
}

// paceOf is the pause between events a block time implies.
func paceOf(block time.Duration) time.Duration {
	return max(0, (block-time.Second)/eventsPerBlock)
}

// streamPort is where a new Stream should open: the port measured fastest,
// or else the first port heard of that has not refused a connection.
func (m *ports) streamPort() (netip.AddrPort, bool) {
	var (
		best  netip.AddrPort
		bestD time.Duration
		found bool
	)
	for _, a := range m.known {
		d, ok := m.speed[a]
		if ok && d < deadPort && (!found || d < bestD) {
			best, bestD, found = a, d, true
		}
	}
	if found {
		return best, true
	}
	for _, a := range m.known {
		if _, ok := m.speed[a]; !ok {
			return a, true
		}
	}
	return netip.AddrPort{}, false
}

// othersRate is the rate, in bytes per second, assumed of the block
// connections besides a Stream: four at about 1.3 s a block.
const othersRate = 30000

// moveGain is how much sooner a move must be expected to finish: the
// estimates are noisy, and a move throws away what the stream has read.
const moveGain = 0.9

// streamMove tells a Stream on cur, pace per event, pos bytes into its
// reply, with left bytes still to be written by anyone, whether to reopen
// on another port. It models the time to finish: staying, the stream and
// the block connections share what is left; moving, the block connections
// work alone while the new stream waits out the old port's pause and the
// request delay and reads the pos bytes again, then both share the rest.
// It moves to the fastest measured port when that finishes in under
// moveGain of the time of staying, and the reread takes under half the
// timeout (the client takes longer for a stall).
func (m *ports) streamMove(cur netip.AddrPort, pace time.Duration, pos, left int64, timeout time.Duration) (netip.AddrPort, bool) {
	to, ok := m.streamPort()
	if !ok || to == cur || pace <= 0 {
		return netip.AddrPort{}, false
	}
	next := max(paceOf(m.speed[to]), time.Millisecond)
	vOld, vNew := event/pace.Seconds(), event/next.Seconds()
	stay := float64(left) / (vOld + othersRate)
	catch := (pace + time.Second + 50*time.Millisecond).Seconds() + float64(pos)/vNew
	if catch >= stay || catch > timeout.Seconds()/2 {
		return netip.AddrPort{}, false // or the reread would look like a stall
	}
	move := catch + max(0, float64(left)-othersRate*catch)/(vNew+othersRate)
	if move < moveGain*stay {
		return to, true
	}
	return netip.AddrPort{}, false
}

// maxPerPort caps connections ever opened to one port, so a withdrawn
// port is not retried for ever.
const maxPerPort = 12

// maxProbes is how many connections may be on ports not yet measured.
const maxProbes = 3

// exploreAbove is the block time above which the client keeps probing
// untried ports: with 1.0 s the floor of any port, a better one is likely
// while the best known is slower than this.
const exploreAbove = 1100 * time.Millisecond

// next picks the port for one more connection. While the best
// port measured takes over exploreAbove per block and no probe is under
// way, it is an untried port (a probe costs one block at that port's pace,
// and the tracker names only two ports per query, so exploring one at a
// time keeps up). Otherwise it is the port expected fastest: by measured
// block time, probingGuess for a port whose first block is under way, or
// untriedGuess. The duration returned is the block time the caller may
// expect: the floor, 1 s, for a probe.
func (m *ports) next(used map[netip.AddrPort]int) (netip.AddrPort, time.Duration, bool) {
	bestKnown := time.Duration(math.MaxInt64)
	probing := 0
	var untried []netip.AddrPort
	for _, a := range m.known {
		d, ok := m.speed[a]
		switch {
		case ok:
			bestKnown = min(bestKnown, d)
		case used[a] > 0:
			probing++
		default:
			untried = append(untried, a)
		}
	}
	if len(untried) > 0 && probing < maxProbes && bestKnown > exploreAbove {
		return untried[0], time.Second, true
	}
	var (
		best     netip.AddrPort
		bestTime time.Duration
		found    bool
	)
	for _, a := range m.known {
		if used[a] >= maxPerPort {
			continue
		}
		guess, ok := m.speed[a]
		switch {
		case ok:
		case used[a] > 0:
			guess = probingGuess
		default:
			guess = untriedGuess
		}
		if guess >= deadPort {
			continue
		}
		if !found || guess < bestTime {
			best, bestTime, found = a, guess, true
		}
	}
	return best, bestTime, found
}
