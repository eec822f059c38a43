package cluster_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/internal/harness"
	"github.com/shoalnet/shoal/server"
)

// scrape reads one metric's value from a /metrics endpoint.
func scrape(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s not in %s", name, url)
	return 0
}

func TestMetricsRiseDuringDownload(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "m.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m := server.NewMetrics()
	specs := []cluster.PeerSpec{{Rate: 4 << 20}, {Rate: 4 << 20}, {Rate: 4 << 20}}
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: specs, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- server.ServeMetrics(ctx, lis, m) }()
	t.Cleanup(func() { cancel(); <-done })
	url := "http://" + lis.Addr().String() + "/metrics"

	if v := scrape(t, url, "shoal_bytes_served_total"); v != 0 {
		t.Fatalf("bytes served before any download: %v", v)
	}
	if v := scrape(t, url, "shoal_registry_peers"); v != 3 {
		t.Fatalf("registry peers: %v, want 3", v)
	}
	var during float64
	cfg := client.Config{OpenPart: func(p string) (client.PartFile, error) {
		return harness.OpenAfterWrites(p, 4, func() { during = scrape(t, url, "shoal_bytes_served_total") })
	}}
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := client.NewDownload(cfg, &client.Registry{Target: "m.bin", Conn: cc}, filepath.Join(t.TempDir(), "out")).Run(ctx); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, url, "shoal_bytes_served_total")
	if during <= 0 || after < float64(len(data)) || after <= during {
		t.Fatalf("bytes served: %v during, %v after; want 0 < during < after >= %d", during, after, len(data))
	}
	if v := scrape(t, url, `grpc_server_handled_total{grpc_code="OK",grpc_method="GetManifest",grpc_service="shoal.v1.PeerService",grpc_type="unary"}`); v < 1 {
		t.Errorf("gRPC server metrics: GetManifest handled %v", v)
	}
}
