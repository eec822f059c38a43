package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// RegistryService implements shoal.v1.RegistryService over a lease table.
type RegistryService struct {
	shoalv1.UnimplementedRegistryServiceServer
	leases *Leases
	gossip *Gossip // nil when the registry does not federate
	now    func() time.Time
}

// NewRegistryService serves leases; gossip, if not nil, is the registry's
// federation, listed by Members.
func NewRegistryService(leases *Leases, gossip *Gossip) *RegistryService {
	return &RegistryService{leases: leases, gossip: gossip, now: leases.cfg.Now}
}

// Announce registers or refreshes a peer.
func (r *RegistryService) Announce(_ context.Context, req *shoalv1.AnnounceRequest) (*shoalv1.AnnounceResponse, error) {
	p, err := peerFromWire(req.GetPeer())
	if err != nil {
		return nil, toStatus(err)
	}
	lease, secret, err := r.leases.Announce(p, req.GetSecret())
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.AnnounceResponse{LeaseMs: lease.Milliseconds(), Secret: secret}, nil
}

// Lookup finds a file and live holders at random.
func (r *RegistryService) Lookup(_ context.Context, req *shoalv1.LookupRequest) (*shoalv1.LookupResponse, error) {
	var (
		id     chunkstore.ID
		name   string
		byName bool
		err    error
	)
	switch f := req.GetFile().(type) {
	case *shoalv1.LookupRequest_ContentId:
		id, _, err = parseAnyID(f.ContentId)
	case *shoalv1.LookupRequest_Name:
		name, byName = f.Name, true
		if name == "" {
			err = fmt.Errorf("%w: empty name", errInvalid)
		}
	default:
		err = fmt.Errorf("%w: name a file by content_id or name", errInvalid)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	info, peers, holders, err := r.leases.Lookup(id, name, byName, int(req.GetLimit()), req.GetExclude())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &shoalv1.LookupResponse{File: fileToWire(info), Holders: uint32(holders), Peers: make([]*shoalv1.PeerInfo, len(peers))}
	for i, p := range peers {
		// Only the file looked up: the rest of a holder's list is noise
		// to the client and most of the message.
		w := &shoalv1.PeerInfo{PeerId: p.ID, Address: p.Addr}
		for _, f := range p.Files {
			if f.ID == info.ID {
				w.Files = append(w.Files, fileToWire(f))
				break
			}
		}
		resp.Peers[i] = w
	}
	return resp, nil
}

// Leave removes a peer at once.
func (r *RegistryService) Leave(_ context.Context, req *shoalv1.LeaveRequest) (*shoalv1.LeaveResponse, error) {
	if err := r.leases.Leave(req.GetPeerId(), req.GetSecret()); err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.LeaveResponse{}, nil
}

// maxListPage is the most files one ListFiles page holds: 1000 entries of
// at most about 1.2 KiB each (a 1 KiB name), well under the 4 MiB limit.
const maxListPage = 1000

// ListFiles lists files with holder counts, one page at a time. The page
// token is the last file's name and content id, so a listing goes on past
// files that came or went between pages.
func (r *RegistryService) ListFiles(_ context.Context, req *shoalv1.ListFilesRequest) (*shoalv1.ListFilesResponse, error) {
	size := int(req.GetPageSize())
	if size == 0 || size > maxListPage {
		size = maxListPage
	}
	after, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &shoalv1.ListFilesResponse{}
	files := r.leases.List()
	if after.name < req.GetPrefix() {
		after = pageKey{name: req.GetPrefix()} // the first name with the prefix
	}
	start, _ := slices.BinarySearchFunc(files, after, func(f ListedFile, a pageKey) int {
		return a.compareTo(f.Name, f.ID)
	})
	if req.GetPageToken() != "" && start < len(files) && files[start].Name == after.name && files[start].ID == after.id {
		start++
	}
	for _, f := range files[start:] {
		if !strings.HasPrefix(f.Name, req.GetPrefix()) {
			break // sorted by name: no later one has it either
		}
		if len(resp.Files) == size {
			last := resp.Files[len(resp.Files)-1].GetFile()
			resp.NextPageToken = pageToken(last.GetName(), last.GetContentId())
			break
		}
		resp.Files = append(resp.Files, &shoalv1.ListedFile{File: fileToWire(f.FileInfo), Holders: uint32(f.Holders), PartialHolders: uint32(f.PartialHolders)})
	}
	return resp, nil
}

// pageKey is where a listing page starts: after this name and id.
type pageKey struct {
	name string
	id   chunkstore.ID
}

// compareTo orders a listed file against the key: negative when the file
// comes before it.
func (a pageKey) compareTo(name string, id chunkstore.ID) int {
	if c := strings.Compare(name, a.name); c != 0 {
		return c
	}
	return slices.Compare(id[:], a.id[:])
}

// pageToken is the opaque token for the files after name and id.
func pageToken(name, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(id + "/" + name))
}

func parsePageToken(tok string) (pageKey, error) {
	if tok == "" {
		return pageKey{}, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	idText, name, ok := strings.Cut(string(raw), "/")
	if err != nil || !ok {
		return pageKey{}, fmt.Errorf("%w: malformed page token", errInvalid)
	}
	id, _, err := parseAnyID(idText)
	if err != nil {
		return pageKey{}, fmt.Errorf("%w: malformed page token", errInvalid)
	}
	return pageKey{name: name, id: id}, nil
}

// Members lists the registries this one gossips with.
func (r *RegistryService) Members(context.Context, *shoalv1.MembersRequest) (*shoalv1.MembersResponse, error) {
	if r.gossip == nil {
		return nil, status.Error(codes.FailedPrecondition, "this registry does not federate (a peer's registry gossips only with --join)")
	}
	return &shoalv1.MembersResponse{Members: r.gossip.Members()}, nil
}

func fileToWire(f FileInfo) *shoalv1.FileInfo {
	return &shoalv1.FileInfo{ContentId: f.IDString(), Name: f.Name, Size: uint64(f.Size), Partial: f.Partial, HidesChunks: f.HidesChunks, FileCount: uint32(f.Files)}
}

func peerToWire(p Peer) *shoalv1.PeerInfo {
	w := &shoalv1.PeerInfo{PeerId: p.ID, Address: p.Addr, Files: make([]*shoalv1.FileInfo, len(p.Files))}
	for i, f := range p.Files {
		w.Files[i] = fileToWire(f)
	}
	return w
}

// peerFromWire converts and checks the parts that need parsing; the lease
// table checks the rest.
func peerFromWire(w *shoalv1.PeerInfo) (Peer, error) {
	if w == nil {
		return Peer{}, fmt.Errorf("%w: no peer", errInvalid)
	}
	if len(w.GetFiles()) > maxWireFiles {
		return Peer{}, fmt.Errorf("%w: %d files in one announce", errTooLarge, len(w.GetFiles()))
	}
	p := Peer{ID: w.GetPeerId(), Addr: w.GetAddress(), Files: make([]FileInfo, len(w.GetFiles()))}
	for i, f := range w.GetFiles() {
		id, tree, err := parseAnyID(f.GetContentId())
		if err != nil {
			return Peer{}, fmt.Errorf("file %d: %w", i, err)
		}
		if f.GetSize() > 1<<62 {
			return Peer{}, fmt.Errorf("%w: file %d: size %d", errInvalid, i, f.GetSize())
		}
		p.Files[i] = FileInfo{ID: id, Name: f.GetName(), Size: int64(f.GetSize()), Partial: f.GetPartial() || f.GetHidesChunks(), HidesChunks: f.GetHidesChunks(), Tree: tree, Files: int(f.GetFileCount())}
	}
	return p, nil
}

// maxWireFiles bounds the work of converting one announce before the lease
// table applies its own, configurable, limit.
const maxWireFiles = 100_000

// parseAnyID reads a file's content id or a folder's tree id; tree says
// which. Both are 32 bytes, hashed in different domains.
func parseAnyID(s string) (id chunkstore.ID, tree bool, err error) {
	if fid, ferr := chunkstore.ParseID(s); ferr == nil {
		return fid, false, nil
	}
	tid, err := chunkstore.ParseTreeID(s)
	return chunkstore.ID(tid), true, err
}
