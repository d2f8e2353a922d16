package s3tier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/tests3"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/s3tier"
)

// One versitygw serves the package's node tests that do not stop it; each
// test has its own prefix in the bucket.
var (
	sharedMu  sync.Mutex
	shared    *tests3.Server
	sharedDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	if shared != nil {
		shared.Kill()
		os.RemoveAll(sharedDir)
	}
	sharedMu.Unlock()
	os.Exit(code)
}

const bucket = "regmirror"

func sharedStore(t *testing.T) *tests3.Server {
	t.Helper()
	bin := tests3.Binary(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		dir, err := os.MkdirTemp("", "regmirror-s3-")
		if err != nil {
			t.Fatal(err)
		}
		s, err := tests3.Launch(bin, dir)
		if err != nil {
			t.Fatal(err)
		}
		shared, sharedDir = s, dir
		makeBucket(t, s)
	}
	return shared
}

// makeBucket creates the bucket through the S3 API.
func makeBucket(t testing.TB, s *tests3.Server) {
	t.Helper()
	tier, err := s3tier.New(s3tier.Options{Endpoint: s.Endpoint, Bucket: bucket, AccessKey: tests3.AccessKey, SecretKey: tests3.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	if err := tier.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// node is one regmirror process sharing the store under prefix.
type node struct {
	*testprocess.Process
	dataDir string
	args    []string // serve's, for restart
}

// restart stops the node (SIGTERM) and starts it again on the same data
// dir and config.
func (n *node) restart(t testing.TB) {
	t.Helper()
	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, n.Logs())
	}
	n.Process = testprocess.Serve(t, testing.Verbose(), n.args...)
}

func startNode(t testing.TB, up *testupstream.Server, s *tests3.Server, prefix, extraS3 string) *node {
	t.Helper()
	return startNodeAt(t, up, s.Endpoint, prefix, extraS3)
}

// startNodeAt is startNode with the store at endpoint (a tests3.Proxy).
func startNodeAt(t testing.TB, up *testupstream.Server, endpoint, prefix, extraS3 string) *node {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "regmirror.toml")
	conf := fmt.Sprintf("[s3]\nendpoint = %q\nbucket = %q\nprefix = %q\naccess_key = %q\nsecret_key_env = \"REGMIRROR_TEST_S3_SECRET\"\npath_style = true\n%s",
		endpoint, bucket, prefix, tests3.AccessKey, extraS3)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGMIRROR_TEST_S3_SECRET", tests3.SecretKey)
	data := filepath.Join(dir, "data")
	args := []string{"--config", cfg, "--data-dir", data, "--upstream-url", up.URL()}
	return &node{Process: testprocess.Serve(t, testing.Verbose(), args...), dataDir: data, args: args}
}

// metric reads a metric from the node's /metrics; it must be there.
func (n *node) metric(t testing.TB, name string) float64 {
	t.Helper()
	v, ok := testpull.MetricSum(t, n.URL, name)
	if !ok {
		t.Fatalf("metric %s not found", name)
	}
	return v
}

// waitUploaded waits until the node has nothing left to upload and has
// uploaded (or found present) at least n objects.
func (n *node) waitUploaded(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		done := n.metric(t, "regmirror_s3_uploads_total") + n.metric(t, "regmirror_s3_upload_already_total")
		if n.metric(t, "regmirror_s3_upload_backlog") == 0 && done >= float64(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("uploads: %v done, backlog %v, want %d\n%s", done, n.metric(t, "regmirror_s3_upload_backlog"), want, n.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const manifestAccept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

// get fetches url and checks the body against want (when given): a body
// that arrives complete must be exactly want.
func get(url string, want digest.Digest) (body []byte, resp *http.Response, err error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return body, resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, resp, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if want != "" && digest.FromBytes(body) != want {
		return body, resp, fmt.Errorf("GET %s: a complete body of digest %s", url, digest.FromBytes(body))
	}
	return body, resp, nil
}

// pulled is what pull fetched: the manifest's digest and its blobs.
type pulled struct {
	manifest digest.Digest
	blobs    []digest.Digest
	outcomes []string // X-Regmirror-Cache of each response
}

// pull fetches repo:ref's manifest and every blob it names through the
// node, verifying each digest.
func pull(t testing.TB, base, repo, ref string) pulled {
	t.Helper()
	body, resp, err := get(base+"/v2/"+repo+"/manifests/"+ref, "")
	if err != nil {
		t.Fatal(err)
	}
	p := pulled{manifest: digest.FromBytes(body), outcomes: []string{resp.Header.Get("X-Regmirror-Cache")}}
	if got := resp.Header.Get("Docker-Content-Digest"); got != p.manifest.String() {
		t.Fatalf("manifest digest header %s, body %s", got, p.manifest)
	}
	var m struct {
		Config struct{ Digest digest.Digest } `json:"config"`
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	p.blobs = append(p.blobs, m.Config.Digest)
	for _, l := range m.Layers {
		p.blobs = append(p.blobs, l.Digest)
	}
	for _, d := range p.blobs {
		_, resp, err := get(base+"/v2/"+repo+"/blobs/"+d.String(), d)
		if err != nil {
			t.Fatal(err)
		}
		p.outcomes = append(p.outcomes, resp.Header.Get("X-Regmirror-Cache"))
	}
	return p
}

// TestNodesShareS3 (issue 12 test 1): node A pulls an image; once A's
// upload backlog is 0, nodes B and C pull the same tag and every blob with
// no upstream request at all; every digest verifies.
func TestNodesShareS3(t *testing.T) {
	s := sharedStore(t)
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/app", "v1", 3, 256<<10)
	prefix := "t1/"
	a := startNode(t, up, s, prefix, "")
	pa := pull(t, a.URL, "library/app", "v1")
	if pa.manifest != testupstream.Digest(t, img) {
		t.Fatalf("manifest %s, want %s", pa.manifest, testupstream.Digest(t, img))
	}
	a.waitUploaded(t, len(pa.blobs)+2) // blobs, manifest, tag record

	up.Reset()
	for _, name := range []string{"B", "C"} {
		n := startNode(t, up, s, prefix, "")
		p := pull(t, n.URL, "library/app", "v1")
		if p.manifest != pa.manifest || len(p.blobs) != len(pa.blobs) {
			t.Fatalf("node %s pulled %s (%d blobs), A %s (%d)", name, p.manifest, len(p.blobs), pa.manifest, len(pa.blobs))
		}
		// And by digest, as clients do for a platform's manifest.
		if _, _, err := get(n.URL+"/v2/library/app/manifests/"+pa.manifest.String(), pa.manifest); err != nil {
			t.Fatal(err)
		}
		if hits := n.metric(t, "regmirror_s3_hits_total"); hits < float64(len(pa.blobs)+1) {
			t.Errorf("node %s: %v S3 hits, want at least %d", name, hits, len(pa.blobs)+1)
		}
	}
	if n := up.Requests(); n != 0 || up.TokenRequests() != 0 {
		t.Fatalf("nodes B and C made %d upstream requests (%d token requests), want 0", n, up.TokenRequests())
	}
}

// objectFile is where the posix backend keeps a blob's object.
func objectFile(s *tests3.Server, prefix string, d digest.Digest) string {
	return s.ObjectPath(bucket, prefix+"blobs/sha256/"+d.Encoded()[:2]+"/"+d.Encoded())
}

// TestCorruptS3Object (issue 12 test 5): an object in the bucket whose
// bytes are junk of the right size is never served as a complete body; it
// is deleted, the blob is fetched from upstream once, and the object is
// uploaded again with the right content.
func TestCorruptS3Object(t *testing.T) {
	s := sharedStore(t)
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/junk", "v1", 1, 512<<10)
	prefix := "t5/"
	a := startNode(t, up, s, prefix, "")
	pa := pull(t, a.URL, "library/junk", "v1")
	a.waitUploaded(t, len(pa.blobs)+2)
	layer := pa.blobs[1]
	path := objectFile(s, prefix, layer)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, fi.Size())
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, junk, 0o644); err != nil {
		t.Fatal(err)
	}

	up.Reset()
	b := startNode(t, up, s, prefix, "")
	url := b.URL + "/v2/library/junk/blobs/" + layer.String()
	_, _, err = get(url, layer)
	if err == nil {
		t.Fatal("the first GET got the right body from a corrupt object")
	}
	if strings.Contains(err.Error(), "a complete body") {
		t.Fatalf("a wrong body was served whole: %v", err)
	}
	if b.metric(t, "regmirror_s3_corrupt_total") != 1 {
		t.Fatalf("corrupt objects counted: %v", b.metric(t, "regmirror_s3_corrupt_total"))
	}
	// The client retries: upstream, once.
	if _, _, err := get(url, layer); err != nil {
		t.Fatal(err)
	}
	if n := up.BlobGETs(layer); n != 1 {
		t.Fatalf("upstream GETs of the layer: %d, want 1", n)
	}
	// B uploads the verified blob again: the object is right now.
	b.waitUploaded(t, 1)
	data, err := os.ReadFile(path)
	if err != nil || digest.FromBytes(data) != layer {
		t.Fatalf("object after re-upload: %v, digest %s", err, digest.FromBytes(data))
	}
}

// writeTagRecord replaces a tag's record in the bucket (through the posix
// backend's file) with one checked at checkedAt.
func writeTagRecord(t *testing.T, s *tests3.Server, prefix, registry, repo, tag string, checkedAt time.Time) {
	t.Helper()
	path := s.ObjectPath(bucket, prefix+"tags/"+registry+"/"+repo+"/"+tag)
	var rec map[string]any
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	// Whole seconds: the new value is never longer than the old one (which
	// may have fewer fractional digits than a fresh time.Now would).
	rec["checkedAt"] = checkedAt.UTC().Truncate(time.Second).Format(time.RFC3339Nano)
	// The backend serves the file's bytes; keep its length with padding.
	out, _ := json.Marshal(rec)
	if len(out) > len(data) {
		t.Fatalf("record grew: %d > %d", len(out), len(data))
	}
	out = append(out, []byte(strings.Repeat(" ", len(data)-len(out)))...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFreshNodeUpstreamDown (issue 12 test 6): with upstream down, an empty
// fresh node serves an image by tag and by digest from S3: a tag record
// within its TTL is answered as is; an older one is answered stale because
// upstream cannot be asked.
func TestFreshNodeUpstreamDown(t *testing.T) {
	s := sharedStore(t)
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/down", "v1", 2, 128<<10)
	up.PushRandomImage(t, "library/down", "v2", 1, 128<<10)
	prefix := "t6/"
	a := startNode(t, up, s, prefix, "")
	p1 := pull(t, a.URL, "library/down", "v1")
	p2 := pull(t, a.URL, "library/down", "v2")
	a.waitUploaded(t, len(p1.blobs)+len(p2.blobs)+4)
	writeTagRecord(t, s, prefix, "docker.io", "library/down", "v2", time.Now().Add(-24*time.Hour))

	up.SetDown(true)
	up.Reset()
	d := startNode(t, up, s, prefix, "")
	got := pull(t, d.URL, "library/down", "v1")
	if got.manifest != testupstream.Digest(t, img) {
		t.Fatalf("by tag: %s, want %s", got.manifest, testupstream.Digest(t, img))
	}
	if _, _, err := get(d.URL+"/v2/library/down/manifests/"+p1.manifest.String(), p1.manifest); err != nil {
		t.Fatalf("by digest: %v", err)
	}
	if n := up.Requests(); n != 0 {
		t.Errorf("a fresh tag record asked upstream %d times", n)
	}
	// v2's record is a day old: upstream is asked, is down, and the
	// record answers.
	if got := pull(t, d.URL, "library/down", "v2"); got.manifest != p2.manifest {
		t.Fatalf("stale tag: %s, want %s", got.manifest, p2.manifest)
	}
	if d.metric(t, "regmirror_s3_stale_tags_total") < 1 {
		t.Error("the stale answer was not counted")
	}
}

// TestS3Down (issue 12 test 4): with the store stopped (SIGSTOP, then
// killed), cache hits do not wait for it, misses go upstream (each blob
// fetched once), their uploads wait in the backlog, and once the store is
// back the backlog drains: a fresh node then serves those blobs from S3
// with upstream down.
func TestS3Down(t *testing.T) {
	s := tests3.Start(t) // its own: this test stops it
	makeBucket(t, s)
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/one", "v1", 2, 256<<10)
	img2 := up.PushRandomImage(t, "library/two", "v1", 2, 256<<10)
	prefix := "t4/"
	// A hung store costs a request 2s, then is skipped for 2s.
	const s3Timeout = 2 * time.Second
	a := startNode(t, up, s, prefix, "timeout = \"2s\"\nbackoff = \"2s\"\n")
	p1 := pull(t, a.URL, "library/one", "v1")
	a.waitUploaded(t, len(p1.blobs)+2)

	s.Pause()
	defer s.Resume()
	start := time.Now()
	hit := pull(t, a.URL, "library/one", "v1")
	if took := time.Since(start); took >= s3Timeout {
		t.Errorf("a pull of cached content took %v with S3 stopped", took)
	}
	for _, o := range hit.outcomes {
		if o != "hit" {
			t.Errorf("cached pull outcomes %v, want all hits", hit.outcomes)
			break
		}
	}
	up.Reset()
	p2 := pull(t, a.URL, "library/two", "v1")
	for _, d := range p2.blobs {
		if n := up.BlobGETs(d); n != 1 {
			t.Errorf("blob %s fetched %d times upstream, want 1", d, n)
		}
	}
	if p2.manifest != testupstream.Digest(t, img2) {
		t.Fatal("wrong manifest")
	}
	if a.metric(t, "regmirror_s3_upload_backlog") < float64(len(p2.blobs)) {
		t.Errorf("backlog %v while S3 is stopped, want the new blobs waiting", a.metric(t, "regmirror_s3_upload_backlog"))
	}

	// The store dies and comes back (same port, same disk).
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	a.waitUploaded(t, len(p1.blobs)+2+len(p2.blobs)+2)

	up.SetDown(true)
	fresh := startNode(t, up, s, prefix, "")
	if got := pull(t, fresh.URL, "library/two", "v1"); got.manifest != p2.manifest {
		t.Fatalf("fresh node after the drain: %s, want %s", got.manifest, p2.manifest)
	}
}

// TestUploadsResumeAfterRestart: a node stopped while S3 is down, with
// blobs still waiting to be uploaded, remembers them on disk and uploads
// them when it starts again; a fresh node then reads the image from the
// bucket with upstream down.
func TestUploadsResumeAfterRestart(t *testing.T) {
	s := tests3.Start(t) // its own: this test stops it
	makeBucket(t, s)
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/later", "v1", 2, 256<<10)
	prefix := "t-resume/"
	a := startNode(t, up, s, prefix, "timeout = \"2s\"\nbackoff = \"2s\"\n")

	s.Pause()
	p := pull(t, a.URL, "library/later", "v1")
	if p.manifest != testupstream.Digest(t, img) {
		t.Fatal("wrong manifest")
	}
	if got := a.metric(t, "regmirror_s3_upload_backlog"); got < float64(len(p.blobs)) {
		t.Fatalf("backlog %v with S3 stopped, want the %d blobs waiting", got, len(p.blobs))
	}
	a.restart(t) // stops with the backlog; S3 is still down while it starts
	marks, err := os.ReadDir(filepath.Join(a.dataDir, "s3-pending"))
	if err != nil || len(marks) < len(p.blobs) {
		t.Fatalf("pending uploads on disk after the stop: %d, %v; want at least %d", len(marks), err, len(p.blobs))
	}
	s.Resume()
	a.waitUploaded(t, len(p.blobs)+1) // the blobs and the manifest, by the restarted node
	if marks, _ := os.ReadDir(filepath.Join(a.dataDir, "s3-pending")); len(marks) != 0 {
		t.Errorf("%d pending marks left after the uploads", len(marks))
	}

	up.SetDown(true)
	fresh := startNode(t, up, s, prefix, "")
	pull(t, fresh.URL, "library/later", p.manifest.String()) // upstream is down: all from S3
	if hits := fresh.metric(t, "regmirror_s3_hits_total"); hits < float64(len(p.blobs)+1) {
		t.Errorf("the fresh node read %v objects from S3, want the manifest and %d blobs", hits, len(p.blobs))
	}
}

// TestRedirectSkopeo (issue 12 test 7): with redirect = true a node that
// lacks a large blob present in S3 answers 307 to a presigned URL, and
// skopeo completes the pull through it (digests preserved); the layer is
// fetched from upstream only once, by the node that uploaded it.
func TestRedirectSkopeo(t *testing.T) {
	s := sharedStore(t)
	up := testupstream.Start(t)
	img, big := up.PushLargeBlobImage(t, "library/big", "v1", 3<<20)
	prefix := "t7/"
	a := startNode(t, up, s, prefix, "")
	pa := pull(t, a.URL, "library/big", "v1")
	a.waitUploaded(t, len(pa.blobs)+2)

	r := startNode(t, up, s, prefix, "redirect = true\n")
	host := strings.TrimPrefix(r.URL, "http://")
	got := realclient.SkopeoCopy(t, host, "docker.io/library/big:v1", filepath.Join(t.TempDir(), "oci"))
	if want := testupstream.Digest(t, img).String(); got != want {
		t.Fatalf("skopeo pulled %s, want %s", got, want)
	}
	if n := r.metric(t, "regmirror_s3_redirects_total"); n < 1 {
		t.Fatalf("redirects: %v, want the large layer redirected", n)
	}
	if n := up.BlobGETs(big); n != 1 {
		t.Fatalf("upstream GETs of the large layer: %d, want 1 (node A's)", n)
	}
	// The node did not cache what it redirected.
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/library/big/blobs/"+big.String(), nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(resp.Header.Get("Location"), s.Endpoint+"/") {
		t.Fatalf("GET of the large layer: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
}

// TestL2CutResumes (issue 12: "a cut resumes from the next source"): an L2
// body cut mid-way is resumed with a ranged GET, from L2 when it answers
// (no upstream request), else from upstream (one ranged GET); either way
// the client gets the right bytes and the blob is cached.
func TestL2CutResumes(t *testing.T) {
	s := sharedStore(t)
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/cut", "v1", 8<<20)
	prefix := "tcut/"
	a := startNode(t, up, s, prefix, "")
	blob := "/v2/library/cut/blobs/" + big.String()
	if _, _, err := get(a.URL+blob, big); err != nil {
		t.Fatal(err)
	}
	a.waitUploaded(t, 1)
	for _, thenDown := range []bool{false, true} {
		up.Reset()
		p := s.Proxy(t)
		n := startNodeAt(t, up, p.Endpoint, prefix, "timeout = \"2s\"\n")
		p.CutAfter(3<<20, thenDown)
		if _, resp, err := get(n.URL+blob, big); err != nil {
			t.Fatalf("cut, then L2 down %v: %v", thenDown, err)
		} else if c := resp.Header.Get("X-Regmirror-Cache"); c != "miss" {
			t.Errorf("outcome %q", c)
		}
		want := 0
		if thenDown {
			want = 1
		}
		if got := up.BlobGETs(big); got != want {
			t.Errorf("cut, then L2 down %v: %d upstream GETs, want %d", thenDown, got, want)
		}
		// serve writes its log in batches (internal/logbuf): wait for the line.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(n.Logs(), "fill resuming") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(n.Logs(), "fill resuming") {
			t.Errorf("cut, then L2 down %v: no resume logged", thenDown)
		}
		// Cached: served again as a hit.
		if _, resp, err := get(n.URL+blob, big); err != nil || resp.Header.Get("X-Regmirror-Cache") != "hit" {
			t.Errorf("after the fill: %v %v", err, resp.Header.Get("X-Regmirror-Cache"))
		}
	}
}

// TestPrivateContentStaysOutOfS3: a private registry's content is never
// uploaded. The bucket serves every node by digest alone, while a private
// registry's upstream decides per repository who may read it. Node A pulls
// a private image and a public one; once A's uploads are done, only the
// public image is in the bucket, and node B, asked for the private layer
// through a public repository, answers what that registry answers (404),
// not the bucket's copy.
func TestPrivateContentStaysOutOfS3(t *testing.T) {
	s := sharedStore(t)
	hub := testupstream.Start(t)
	hub.PushRandomImage(t, "library/app", "v1", 1, 4096)
	corp := testupstream.Start(t, testupstream.WithCredentials("mirror", "s3cret"))
	img := corp.PushRandomImage(t, "team/a", "v1", 1, 4096)
	const corpName = "registry.corp:5000"
	private := fmt.Sprintf("\n[[registry]]\nname = %q\nurl = %q\nusername = \"mirror\"\npassword = \"s3cret\"\nprivate = true\n", corpName, corp.URL())
	prefix := "t-private/"
	a := startNode(t, hub, s, prefix, private)

	if got := testpull.NS(t, a.URL, corpName, "team/a", "v1"); got != testupstream.Digest(t, img) {
		t.Fatalf("private manifest %s, want %s", got, testupstream.Digest(t, img))
	}
	p := pull(t, a.URL, "library/app", "v1")
	a.waitUploaded(t, len(p.blobs)+2) // the public image's blobs, manifest and tag record
	if n := a.metric(t, "regmirror_s3_uploads_total"); n != float64(len(p.blobs)+2) {
		t.Errorf("%v objects uploaded, want the public image's %d", n, len(p.blobs)+2)
	}
	for _, d := range append(testupstream.LayerDigests(t, img), testupstream.Digest(t, img)) {
		if _, err := os.Stat(objectFile(s, prefix, d)); err == nil {
			t.Errorf("the private registry's %s is in the bucket", d)
		}
	}
	for _, d := range append(p.blobs, p.manifest) {
		if _, err := os.Stat(objectFile(s, prefix, d)); err != nil {
			t.Errorf("the public image's %s is not in the bucket: %v", d, err)
		}
	}

	b := startNode(t, hub, s, prefix, private)
	layer := testupstream.LayerDigests(t, img)[0]
	resp, body := testpull.Send(t, http.MethodGet, b.URL+"/v2/library/x/blobs/"+layer.String())
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") {
		t.Errorf("node B, private layer through a public name: %d %.200q, want 404 BLOB_UNKNOWN", resp.StatusCode, body)
	}
}
