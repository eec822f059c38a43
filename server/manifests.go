package server

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// GetManifests limits: the files one call may name, and the manifest
// bytes one message carries (a larger manifest goes alone).
const (
	maxManifestsPerCall = 1000
	manifestPageBytes   = 1 << 20
)

// GetManifests streams the manifests of the files asked for, in order.
func (p *PeerService) GetManifests(req *shoalv1.GetManifestsRequest, stream grpc.ServerStreamingServer[shoalv1.GetManifestsResponse]) error {
	ids := req.GetContentIds()
	switch {
	case len(ids) == 0:
		return toStatus(fmt.Errorf("%w: no content ids", errInvalid))
	case len(ids) > maxManifestsPerCall:
		return toStatus(fmt.Errorf("%w: %d content ids, at most %d per call", errTooLarge, len(ids), maxManifestsPerCall))
	}
	var (
		page = &shoalv1.GetManifestsResponse{}
		size int
	)
	for k, s := range ids {
		id, err := chunkstore.ParseID(s)
		if err != nil {
			return toStatus(fmt.Errorf("content id %d: %w", k, err))
		}
		m, err := p.files.Manifest(id)
		if err != nil {
			return toStatus(err)
		}
		w := ManifestToWire(m)
		n := proto.Size(w)
		if len(page.Manifests) > 0 && size+n > manifestPageBytes {
			if err := stream.Send(page); err != nil {
				return err
			}
			page, size = &shoalv1.GetManifestsResponse{}, 0
		}
		page.Manifests = append(page.Manifests, w)
		size += n
	}
	return stream.Send(page)
}
