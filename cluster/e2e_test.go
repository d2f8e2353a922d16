package cluster_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cluster"
	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// node is one regmirror process of the test cluster.
type node struct {
	url  string
	proc *testprocess.Process
}

// testCluster is three regmirror processes with [cluster] configured,
// sharing one secret, in front of one test upstream.
type testCluster struct {
	up     *testupstream.Server
	nodes  []*node
	secret []byte
}

// freePorts reserves n loopback ports: the nodes must know each other's
// URLs before they start. The listeners are closed just before the
// processes bind them.
func freePorts(t *testing.T, n int) []int {
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func startCluster(t *testing.T, up *testupstream.Server) *testCluster {
	dir := t.TempDir()
	c := &testCluster{up: up, secret: []byte("a shared secret of the test cluster")}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, append(c.secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	var urls []string
	for _, p := range ports {
		urls = append(urls, "http://127.0.0.1:"+strconv.Itoa(p))
	}
	for i, p := range ports {
		cfg := filepath.Join(dir, fmt.Sprintf("node%d.toml", i))
		toml := fmt.Sprintf("[cluster]\nself = %q\npeers = [%q, %q, %q]\nsecret_file = %q\n", urls[i], urls[0], urls[1], urls[2], secretFile)
		if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		proc := testprocess.Serve(t, testing.Verbose(), "--config", cfg, "--data-dir", filepath.Join(dir, fmt.Sprintf("data%d", i)),
			"--upstream-url", up.URL(), "--listen", "127.0.0.1:"+strconv.Itoa(p))
		if proc.URL != urls[i] {
			t.Fatalf("node %d listens on %s, want %s", i, proc.URL, urls[i])
		}
		c.nodes = append(c.nodes, &node{url: urls[i], proc: proc})
	}
	// Each node counts its peers once they answered a ping.
	for _, n := range c.nodes {
		waitFor(t, n.url+" sees both peers up", func() bool { return testpull.Metric(t, n.url, "regmirror_cluster_peer_up") == 2 })
	}
	return c
}

func (c *testCluster) urls() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.url)
	}
	return out
}

// owner is the node that owns d when every node is up.
func (c *testCluster) owner(d digest.Digest) int {
	o := cluster.Owner(d.String(), c.urls())
	for i, n := range c.nodes {
		if n.url == o {
			return i
		}
	}
	panic("no owner")
}

// waitFor polls cond (a state another process reaches, not a duration).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pull is one client's download of a blob, hashed as it streams.
type pull struct {
	node      int
	firstByte chan struct{} // closed once the first body bytes arrived
	done      chan struct{}
	n         int64
	sum       digest.Digest
	complete  bool // the body ended as its Content-Length said
	err       error
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}

func startPull(url string, node int) *pull {
	p := &pull{node: node, firstByte: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var once sync.Once
		defer once.Do(func() { close(p.firstByte) })
		resp, err := client.Get(url)
		if err != nil {
			p.err = err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			p.err = fmt.Errorf("status %s", resp.Status)
			return
		}
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			k, err := resp.Body.Read(buf)
			if k > 0 {
				once.Do(func() { close(p.firstByte) })
				h.Write(buf[:k])
				p.n += int64(k)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				p.err = err
				return
			}
		}
		p.complete = resp.ContentLength < 0 || p.n == resp.ContentLength
		p.sum = digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	}()
	return p
}

// startPulls starts perNode clients of blob d on every node.
func (c *testCluster) startPulls(d digest.Digest, perNode int) []*pull {
	var pulls []*pull
	for i, n := range c.nodes {
		for range perNode {
			pulls = append(pulls, startPull(blobURL(n.url, d), i))
		}
	}
	return pulls
}

// waitFirstBytes waits until every pull has received bytes (while
// upstream holds the rest of the blob at its gate).
func waitFirstBytes(t *testing.T, pulls []*pull) {
	t.Helper()
	for _, p := range pulls {
		select {
		case <-p.firstByte:
		case <-time.After(2 * time.Minute):
			t.Fatalf("a client of node %d got no byte while upstream held the blob", p.node)
		}
	}
}

func blobURL(base string, d digest.Digest) string {
	return base + "/v2/library/big/blobs/" + d.String()
}

// TestCluster runs the cluster scenarios of issue 12 against one upstream
// and one set of three nodes; the owner-killed case runs last.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three regmirror processes")
	}
	up := testupstream.Start(t)
	c := startCluster(t, up)
	t.Run("OneUpstreamDownload", func(t *testing.T) { testOneUpstreamDownload(t, c) })
	t.Run("PeerEndpointRefusesBadSignatures", func(t *testing.T) { testPeerEndpointRefuses(t, c) })
	t.Run("OwnerKilledMidFill", func(t *testing.T) { testOwnerKilled(t, c) })
}

// testOneUpstreamDownload is issue 12's test 2: 3 nodes × 16 clients on one
// cold 128 MiB blob: exactly one upstream blob GET, every body verifies,
// and the first bytes reach every client while the upstream download is
// still held at its gate.
func testOneUpstreamDownload(t *testing.T, c *testCluster) {
	const size = 128 << 20
	_, d := c.up.PushLargeBlobImage(t, "library/big", "one", size)
	gate := c.up.Gate(d).SetHeadBytes(1 << 20)
	defer gate.Open()
	owner := c.owner(d)
	pulls := c.startPulls(d, 16)
	waitFirstBytes(t, pulls)
	// Every client has bytes, and upstream has not sent the rest yet: the
	// gate is still closed. All came from one upstream request.
	for _, p := range pulls {
		select {
		case <-p.done:
			if p.err != nil {
				t.Fatalf("a client of node %d failed before the gate opened: %v", p.node, p.err)
			}
			t.Fatalf("a client of node %d finished while upstream held the blob", p.node)
		default:
		}
	}
	if n := c.up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream blob GETs while the download is held, want 1", n)
	}
	gate.Open()
	for _, p := range pulls {
		<-p.done
		if p.err != nil || !p.complete || p.sum != d || p.n != size {
			t.Fatalf("a client of node %d: %d bytes, digest %s, err %v", p.node, p.n, p.sum, p.err)
		}
	}
	if n := c.up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream blob GETs, want 1 for the whole cluster", n)
	}
	// The owner answered the other two nodes; they forwarded.
	if got := testpull.Metric(t, c.nodes[owner].url, "regmirror_cluster_peer_requests_served_total"); got < 2 {
		t.Errorf("owner served %v peer requests, want at least 2", got)
	}
	for i, n := range c.nodes {
		if i != owner {
			if got := testpull.Metric(t, n.url, "regmirror_cluster_peer_requests_forwarded_total"); got < 1 {
				t.Errorf("node %d forwarded %v downloads to the owner, want at least 1", i, got)
			}
		}
	}
}

// testPeerEndpointRefuses: the real endpoint refuses a request signed with
// another key, an unsigned ping, and a replayed signature (401), and
// accepts a good one.
func testPeerEndpointRefuses(t *testing.T, c *testCluster) {
	base := c.nodes[0].url
	get := func(path, header string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if header != "" {
			req.Header.Set(cluster.Header, header)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	good := cluster.SignForTest(c.secret, http.MethodGet, cluster.PingPath)
	if code := get(cluster.PingPath, good); code != http.StatusOK {
		t.Fatalf("a good ping: %d", code)
	}
	if code := get(cluster.PingPath, good); code != http.StatusUnauthorized {
		t.Fatalf("the same ping replayed: %d, want 401", code)
	}
	if code := get(cluster.PingPath, cluster.SignForTest([]byte("not the cluster's secret at all"), http.MethodGet, cluster.PingPath)); code != http.StatusUnauthorized {
		t.Fatalf("a ping signed with another key: %d, want 401", code)
	}
	if code := get(cluster.PingPath, ""); code != http.StatusUnauthorized {
		t.Fatalf("an unsigned ping: %d, want 401", code)
	}
	// A blob request signed for another path is refused before any work.
	d := digest.FromString("not pushed")
	if code := get("/v2/library/big/blobs/"+d.String(), cluster.SignForTest(c.secret, http.MethodGet, "/v2/library/other/blobs/"+d.String())); code != http.StatusUnauthorized {
		t.Fatalf("a blob request with the signature of another path: %d, want 401", code)
	}
	if got := testpull.Metric(t, base, "regmirror_cluster_peer_requests_rejected_total"); got < 3 { // replay, other key, other path (unsigned is no peer request)
		t.Fatalf("rejected counter %v, want at least 3", got)
	}
}

// testOwnerKilled is issue 12's test 3: the owner is killed mid-fill. Every
// client gets the right bytes or a cut connection, never a complete wrong
// body; the clients of the other nodes still get the blob (their fills
// resume from the next source); clients that were cut retry and get it;
// the blob ends up cached on the surviving nodes.
func testOwnerKilled(t *testing.T, c *testCluster) {
	const size = 32 << 20
	_, d := c.up.PushLargeBlobImage(t, "library/big", "killed", size)
	gate := c.up.Gate(d).SetHeadBytes(1 << 20)
	defer gate.Open()
	owner := c.owner(d)
	pulls := c.startPulls(d, 4)
	waitFirstBytes(t, pulls)
	if n := c.up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream blob GETs before the kill, want 1 (the others stream from the owner)", n)
	}
	c.nodes[owner].proc.Kill()
	gate.Open()
	for _, p := range pulls {
		<-p.done
		if p.complete && p.err == nil && p.sum != d {
			t.Fatalf("a client of node %d got a complete wrong body (%d bytes, %s)", p.node, p.n, p.sum)
		}
		if p.node == owner {
			if p.err == nil && p.complete {
				t.Fatalf("a client of the killed owner completed")
			}
			continue
		}
		if p.err != nil || p.sum != d {
			t.Fatalf("a client of surviving node %d: %d bytes, digest %s, err %v", p.node, p.n, p.sum, p.err)
		}
	}
	// The killed owner's clients retry on the survivors, which now serve
	// the blob from their caches.
	for i, n := range c.nodes {
		if i == owner {
			continue
		}
		p := startPull(blobURL(n.url, d), i)
		<-p.done
		if p.err != nil || p.sum != d {
			t.Fatalf("retry on node %d: %d bytes, %s, %v", i, p.n, p.sum, p.err)
		}
		resp, err := client.Head(blobURL(n.url, d))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Regmirror-Cache"); got != "hit" {
			t.Fatalf("node %d after the retries: cache %q, want hit", i, got)
		}
	}
	if n := c.up.BlobGETs(d); n > 3 {
		t.Errorf("%d upstream blob GETs, want at most one per node", n)
	}
	t.Logf("upstream blob GETs with the owner killed mid-fill: %d", c.up.BlobGETs(d))
}
