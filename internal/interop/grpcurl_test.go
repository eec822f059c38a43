package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalnet/shoal/internal/cluster"
)

// grpcurl builds grpcurl from tools/go.mod once per test binary.
func grpcurl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "grpcurl")
	cmd := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", bin, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = repoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build grpcurl: %v\n%s", err, b)
	}
	return bin
}

func TestGrpcurlAgainstPeerAndRegistry(t *testing.T) {
	bin := grpcurl(t)
	dir := t.TempDir()
	data := writeRandom(t, dir, "doc.txt", 40_000)
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: make([]cluster.PeerSpec, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	peer, reg := c.Peers[0].Addr(), c.Registry.Addr()
	call := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, bin, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	list := call(peer, "list")
	for _, svc := range []string{"shoal.v1.PeerService", "shoal.v1.RegistryService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(list, svc) {
			t.Errorf("list lacks %s:\n%s", svc, list)
		}
	}
	if d := call(peer, "describe", "shoal.v1.PeerService"); !strings.Contains(d, "rpc GetChunks ( .shoal.v1.GetChunksRequest ) returns ( stream .shoal.v1.GetChunksResponse )") {
		t.Errorf("describe:\n%s", d)
	}
	var mr struct {
		Manifest struct {
			ContentID   string   `json:"contentId"`
			Size        string   `json:"size"`
			ChunkHashes []string `json:"chunkHashes"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(call("-d", `{"name":"doc.txt"}`, peer, "shoal.v1.PeerService/GetManifest")), &mr); err != nil {
		t.Fatal(err)
	}
	if mr.Manifest.Size != "40000" || len(mr.Manifest.ChunkHashes) != 3 {
		t.Fatalf("GetManifest: %+v", mr)
	}
	var chunk struct {
		Index  int    `json:"index"`
		Offset string `json:"offset"`
		Data   []byte `json:"data"`
	}
	out := call("-d", `{"content_id":"`+mr.Manifest.ContentID+`","indexes":[2]}`, peer, "shoal.v1.PeerService/GetChunks")
	if err := json.Unmarshal([]byte(out), &chunk); err != nil {
		t.Fatal(err)
	}
	if chunk.Index != 2 || chunk.Offset != "32768" || !bytes.Equal(chunk.Data, data[32768:]) {
		t.Fatalf("GetChunks: index %d offset %s, %d bytes", chunk.Index, chunk.Offset, len(chunk.Data))
	}
	if l := call("-d", `{"name":"doc.txt"}`, reg, "shoal.v1.RegistryService/Lookup"); !strings.Contains(l, peer) || !strings.Contains(l, mr.Manifest.ContentID) {
		t.Errorf("Lookup:\n%s", l)
	}
	if l := call(reg, "shoal.v1.RegistryService/ListFiles"); !strings.Contains(l, `"holders": 1`) {
		t.Errorf("ListFiles:\n%s", l)
	}
	if h := call(peer, "grpc.health.v1.Health/Check"); !strings.Contains(h, "SERVING") {
		t.Errorf("health:\n%s", h)
	}
}
