package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// tieredUpstream answers every blob from the tier it names ("" for the
// registry itself).
type tieredUpstream struct {
	*upstream.Registry
	content []byte
	tier    string
}

func (u *tieredUpstream) GetBlob(_ context.Context, _ string, _ digest.Digest, offset int64) (*upstream.Blob, error) {
	return &upstream.Blob{Body: io.NopCloser(bytes.NewReader(u.content[offset:])), Offset: offset,
		Size: int64(len(u.content)), Tier: u.tier}, nil
}

// TestTierBytesAreNotUpstreamTraffic: a blob a shared tier (S3, a cluster
// peer) sent is no upstream download in /metrics or on the status page
// (before, a node counted it as both, and the cluster's savings as
// traffic); one the registry sent is.
func TestTierBytesAreNotUpstreamTraffic(t *testing.T) {
	for _, tier := range []string{"s3", "peer", ""} {
		content := []byte("a blob that came from " + tier)
		d := digest.FromBytes(content)
		up := &tieredUpstream{Registry: unreachable(t, "docker.io"), content: content, tier: tier}
		g := startGuardServer(t, tempStore(t), func(o *Options) { o.Registries = []Upstream{up} })
		resp, err := http.Get("http://" + g.addr + "/v2/library/x/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("tier %q: %d, %d bytes", tier, resp.StatusCode, len(body))
		}
		want := float64(len(content))
		if tier != "" {
			want = 0
		}
		if got := counterValue(t, g.metrics.upstreamBytes.WithLabelValues("docker.io")); got != want {
			t.Errorf("tier %q: regmirror_upstream_bytes_total %v, want %v", tier, got, want)
		}
		if got := g.status.Model(func(string, string) bool { return true }).SinceStart.UpstreamBytes; got != int64(want) {
			t.Errorf("tier %q: the status page's upstream bytes %d, want %v", tier, got, want)
		}
	}
}
