package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
)

// Errors a download reports. Callers test them with errors.Is; every
// failure a peer or registry reports, over gRPC or the course protocol,
// wraps exactly one of them.
var (
	// ErrNoPeers: no peer could be found or kept working.
	ErrNoPeers = errors.New("no peers hold the file")
	// ErrExists: the output file exists with other contents.
	ErrExists = errors.New("output exists with different contents")
	// ErrIsFolder: a file was asked for by a name or id that names a
	// folder; fetch it with NewTreeDownload.
	ErrIsFolder = errors.New("names a folder")
	// ErrIsFile: a folder was asked for by a name or id that names a file.
	ErrIsFile = errors.New("names a file, not a folder")
	// ErrBusyOutput: another download is writing the same output.
	ErrBusyOutput = errors.New("another download is writing this output")
	// ErrCorrupt: a peer sent bytes that do not match the manifest.
	ErrCorrupt = errors.New("chunk does not match its hash")
	// ErrProtocol: a peer broke the protocol (wrong chunk, wrong offset,
	// too many bytes).
	ErrProtocol = errors.New("peer broke the protocol")
	// ErrStalled: a peer sent nothing for the stall timeout.
	ErrStalled = errors.New("peer stalled")
	// ErrNotFound: the file is not on the network, or a peer does not hold
	// it (any more).
	ErrNotFound = chunkstore.ErrNotFound
	// ErrChunkNotHeld: a peer holds the file only in part and not yet this
	// chunk.
	ErrChunkNotHeld = chunkstore.ErrChunkNotHeld
	// ErrBusy: a peer serves as many downloads as it allows; try it later.
	ErrBusy = errors.New("peer busy")
	// ErrRehashing: a peer's copy changed on disk or is being hashed; try
	// it later.
	ErrRehashing = errors.New("peer is rehashing the file")
	// ErrUnreachable: no connection to the peer or registry.
	ErrUnreachable = errors.New("unreachable")
	// ErrDenied: the peer or registry refused our credentials.
	ErrDenied = errors.New("permission denied")
	// ErrRejected: the peer or registry refused the request as malformed
	// or too large: an incompatible or broken endpoint.
	ErrRejected = errors.New("request rejected")
	// ErrAmbiguous: a name matches several files; ask by content id.
	ErrAmbiguous = errors.New("name matches several files")
	// ErrRemote: the peer or registry failed on its side.
	ErrRemote = errors.New("remote error")
	// ErrDisk: the output could not be written; the download ends.
	ErrDisk = errors.New("cannot write the output")
	// ErrNameChanged: the name being downloaded now names other contents
	// on the network (see NameChangedError).
	ErrNameChanged = errors.New("name changed on the network")
)

// NameChangedError says that the name a download resolved now stands for
// another content id: the file was edited while it was being fetched.
type NameChangedError struct {
	Name     string
	Old, New chunkstore.ID
}

func (e *NameChangedError) Error() string {
	return fmt.Sprintf("%s changed on the network (was %s, now %s)", e.Name, e.Old, e.New)
}

// Unwrap makes the error match ErrNameChanged.
func (e *NameChangedError) Unwrap() error { return ErrNameChanged }

// verdict is what a download does after a failure.
type verdict int

const (
	// retryChunk: the chunk goes back to the queue for another peer; this
	// peer keeps working and is never asked for that chunk again.
	retryChunk verdict = iota
	// backOff: the peer pauses, with growing waits, then works again.
	backOff
	// dropPeer: the peer is not asked again in this download.
	dropPeer
	// endDownload: the whole download ends with the error.
	endDownload
)

// DropReason says why a download stopped using a peer. It is a value,
// also in `shoal get --json`, never text to take apart.
type DropReason string

// Drop reasons.
const (
	DropCorrupt     DropReason = "corrupt"     // sent bytes that failed their hash
	DropProtocol    DropReason = "protocol"    // broke the protocol
	DropNotHeld     DropReason = "not_held"    // does not hold the file
	DropUnreachable DropReason = "unreachable" // connection failed or was lost
	DropStalled     DropReason = "stalled"     // sent nothing for the stall timeout
	DropBusy        DropReason = "busy"        // stayed busy or rehashing through every back-off
	DropDenied      DropReason = "denied"      // refused our credentials
	DropFailed      DropReason = "failed"      // any other failure on its side
	DropReplaced    DropReason = "replaced"    // slowest, replaced by a faster one
)

// failureTable decides for every failure, gRPC or course: the first row
// whose error matches wins.
var failureTable = []struct {
	err    error
	then   verdict
	reason DropReason
}{
	{context.Canceled, endDownload, ""},
	{context.DeadlineExceeded, endDownload, ""},
	{ErrDisk, endDownload, ""},
	{ErrNameChanged, endDownload, ""},
	{ErrChunkNotHeld, retryChunk, ""},
	{ErrBusy, backOff, DropBusy},
	{ErrRehashing, backOff, DropBusy},
	{ErrCorrupt, dropPeer, DropCorrupt},
	{ErrProtocol, dropPeer, DropProtocol},
	{ErrStalled, dropPeer, DropStalled},
	{ErrNotFound, dropPeer, DropNotHeld},
	{ErrUnreachable, dropPeer, DropUnreachable},
	{ErrDenied, dropPeer, DropDenied},
}

// decide says what to do after err, and, when the peer is dropped, why.
// An error no row matches (a reset connection, a course peer's bad reply)
// drops the peer as unreachable or failed.
func decide(err error) (verdict, DropReason) {
	for _, row := range failureTable {
		if errors.Is(err, row.err) {
			return row.then, row.reason
		}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) {
		return dropPeer, DropUnreachable
	}
	return dropPeer, DropFailed
}

// reasonDomain is the ErrorInfo domain shoal servers put on their
// statuses; its Reason tells apart failures that share a code.
const reasonDomain = "shoal.v1"

// codeTable maps status codes to the package's errors where the status
// carries no shoal reason (older peers, other implementations). Any other
// code is ErrRemote: a peer's Canceled or DeadlineExceeded must never look
// like the end of our own context.
var codeTable = map[codes.Code]error{
	codes.NotFound:           ErrNotFound,
	codes.ResourceExhausted:  ErrBusy,
	codes.Unavailable:        ErrUnreachable,
	codes.PermissionDenied:   ErrDenied,
	codes.Unauthenticated:    ErrDenied,
	codes.InvalidArgument:    ErrRejected,
	codes.OutOfRange:         ErrRejected,
	codes.Unimplemented:      ErrRejected,
	codes.FailedPrecondition: ErrAmbiguous,
}

// reasonTable maps the reasons shoal servers send (server/status.go) to
// the package's errors.
var reasonTable = map[string]error{
	"FILE_NOT_FOUND": ErrNotFound,
	"CHUNK_NOT_HELD": ErrChunkNotHeld,
	"BUSY":           ErrBusy,
	"FILE_CHANGED":   ErrRehashing,
	"NOT_READY":      ErrRehashing,
	"TOO_LARGE":      ErrRejected,
	"REGISTRY_FULL":  ErrBusy,
	"INVALID":        ErrRejected,
	"OUT_OF_RANGE":   ErrRejected,
	"BAD_ID":         ErrRejected,
	"AMBIGUOUS":      ErrAmbiguous,
	"NOT_OWNER":      ErrDenied,
}

// fromStatus turns any error of a gRPC call into one that wraps one of the
// package's errors, saying what was being done.
func fromStatus(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	sentinel, ok := codeTable[st.Code()]
	if !ok {
		sentinel = ErrRemote
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == reasonDomain {
			if e, ok := reasonTable[info.GetReason()]; ok {
				sentinel = e
			}
		}
	}
	msg := plainMessage(st.Message())
	if !strings.Contains(msg, sentinel.Error()) {
		msg = sentinel.Error() + ": " + msg
	}
	return wrapped{text: what + ": " + msg, err: sentinel}
}

// callError is fromStatus for a call to a server of kind ("registry" or
// "peer") made with a deadline of timeout under ctx: an expired deadline
// says there was no reply in time, and a server that answers in plain HTTP
// says it is not a shoal registry (or peer).
func callError(ctx context.Context, kind, what string, err error, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: no reply within %v", what, ErrUnreachable, timeout)
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && strings.Contains(st.Message(), "frame too large") {
		return fmt.Errorf("%s: %w: not a shoal %s (it answered in plain HTTP/1)", what, ErrUnreachable, kind)
	}
	return fromStatus(what, err)
}

// plainMessage strips grpc-go's transport wrapping from a status message:
// `connection error: desc = "transport: Error while dialing: dial tcp
// ADDR: connect: connection refused"` says "dial tcp ADDR: connect:
// connection refused".
func plainMessage(msg string) string {
	if i := strings.Index(msg, `desc = "`); i >= 0 {
		msg = strings.TrimSuffix(msg[i+len(`desc = "`):], `"`)
	}
	msg = strings.TrimPrefix(msg, "transport: ")
	msg = strings.TrimPrefix(msg, "Error while dialing: ")
	msg = strings.TrimPrefix(msg, "authentication handshake failed: ")
	return msg
}

// wrapped is an error whose text already says what err says.
type wrapped struct {
	text string
	err  error
}

func (w wrapped) Error() string { return w.text }
func (w wrapped) Unwrap() error { return w.err }
