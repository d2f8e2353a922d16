package testupstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testclock"
)

// token fetches a token from s's token server for scopes.
func token(t *testing.T, s *Server, user, pass string, scopes ...string) (string, int) {
	t.Helper()
	q := url.Values{"service": {Service}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodGet, s.TokenURL()+"?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if body.Token == "" || body.Token != body.AccessToken || body.ExpiresIn <= 0 || body.IssuedAt == "" {
			t.Fatalf("token response %+v", body)
		}
	}
	return body.Token, resp.StatusCode
}

// get does a registry request with a bearer token (if any).
func get(t *testing.T, method, u, tok string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPullWithRemote(t *testing.T) {
	s := Start(t)
	img := s.PushRandomImage(t, "library/alpine", "3.20", 2, 1000)
	s.Reset()

	ref, err := name.ParseReference(s.Ref("library/alpine", "3.20"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if Digest(t, got) != Digest(t, img) {
		t.Fatalf("digest %s, want %s", Digest(t, got), Digest(t, img))
	}
	mt, _ := got.MediaType()
	if mt != types.DockerManifestSchema2 {
		t.Errorf("media type %s", mt)
	}
	ls, _ := got.Layers()
	for i, l := range ls {
		rc, err := l.Compressed() // verifies the digest
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, rc), LayerBytes(t, img, i)) {
			t.Fatalf("layer %d differs", i)
		}
		rc.Close()
	}
	if s.TokenRequests() == 0 || s.Unauthorized() == 0 {
		t.Errorf("token requests %d, 401s %d: the pull skipped the token dance", s.TokenRequests(), s.Unauthorized())
	}
	for _, d := range LayerDigests(t, img) {
		if n := s.BlobGETs(d); n != 1 {
			t.Errorf("BlobGETs(%s) = %d, want 1", d, n)
		}
	}
	if n := s.ManifestRequests(http.MethodGet); n != 1 {
		t.Errorf("manifest GETs %d, want 1", n)
	}
	if n := s.Count(http.MethodGet, "/v2/library/alpine/manifests/3.20"); n != 1 {
		t.Errorf("Count = %d", n)
	}
	s.Reset()
	if s.TokenRequests() != 0 || s.ManifestRequests(http.MethodGet) != 0 || s.BlobGETs(LayerDigests(t, img)[0]) != 0 {
		t.Error("Reset kept counters")
	}
}

func TestChallengeAndScopes(t *testing.T) {
	s := Start(t)
	s.PushRandomImage(t, "a", "v1", 1, 100)
	s.PushRandomImage(t, "b", "v1", 1, 100)

	resp := get(t, http.MethodGet, s.URL()+"/v2/", "")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v2/ without token: %d", resp.StatusCode)
	}
	want := fmt.Sprintf(`Bearer realm="%s/token",service="test-registry"`, s.URL())
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge %q, want %q", got, want)
	}
	resp = get(t, http.MethodGet, s.URL()+"/v2/a/manifests/v1", "")
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasSuffix(got, `,scope="repository:a:pull"`) {
		t.Fatalf("challenge %q lacks scope", got)
	}

	tok, _ := token(t, s, "", "", "repository:a:pull")
	if resp := get(t, http.MethodGet, s.URL()+"/v2/", tok); resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ with a token: %d", resp.StatusCode)
	}
	if resp := get(t, http.MethodGet, s.URL()+"/v2/a/manifests/v1", tok); resp.StatusCode != http.StatusOK {
		t.Fatalf("a with a's token: %d", resp.StatusCode)
	}
	resp = get(t, http.MethodGet, s.URL()+"/v2/b/manifests/v1", tok)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="repository:b:pull"`) {
		t.Fatalf("b with a's token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// Pull scope does not allow writes.
	resp = get(t, http.MethodPost, s.URL()+"/v2/a/blobs/uploads/", tok)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="repository:a:push"`) {
		t.Fatalf("push with pull token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// Several scope parameters in one token.
	tok2, _ := token(t, s, "", "", "repository:a:pull", "repository:b:pull,push")
	for _, p := range []string{"/v2/a/manifests/v1", "/v2/b/manifests/v1"} {
		if resp := get(t, http.MethodGet, s.URL()+p, tok2); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp := get(t, http.MethodGet, s.URL()+"/v2/a/manifests/v1", "bogus"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bogus token: %d", resp.StatusCode)
	}
	s.RevokeTokens()
	if resp := get(t, http.MethodGet, s.URL()+"/v2/a/manifests/v1", tok); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", resp.StatusCode)
	}
}

// TestTokenExpiry: a token is honoured up to its expiry on the server's
// clock (WithClock) and refused after it.
func TestTokenExpiry(t *testing.T) {
	clock := testclock.New()
	s := Start(t, WithTokenExpiry(50*time.Millisecond), WithClock(clock.Now))
	tok, _ := token(t, s, "", "")
	if resp := get(t, http.MethodGet, s.URL()+"/v2/", tok); resp.StatusCode != http.StatusOK {
		t.Fatalf("fresh token: %d", resp.StatusCode)
	}
	clock.Advance(50 * time.Millisecond)
	if resp := get(t, http.MethodGet, s.URL()+"/v2/", tok); resp.StatusCode != http.StatusOK {
		t.Fatalf("token at its expiry instant: %d", resp.StatusCode)
	}
	clock.Advance(time.Nanosecond)
	if resp := get(t, http.MethodGet, s.URL()+"/v2/", tok); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", resp.StatusCode)
	}
}

func TestCredentials(t *testing.T) {
	s := Start(t, WithCredentials("alice", "s3cret"))
	s.PushRandomImage(t, "private/app", "v1", 1, 100) // pushes with the credentials

	if _, code := token(t, s, "", "", "repository:private/app:pull"); code != http.StatusUnauthorized {
		t.Fatalf("anonymous token: %d", code)
	}
	if _, code := token(t, s, "alice", "wrong", "repository:private/app:pull"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}
	ref, _ := name.ParseReference(s.Ref("private/app", "v1"))
	if _, err := remote.Image(ref); err == nil {
		t.Fatal("anonymous pull of a private registry worked")
	}
	if _, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	// OAuth2 flow, as go-containerregistry uses it with an identity token.
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}, "scope": {"repository:private/app:pull"}, "service": {Service}}
	resp, err := http.PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" || body.RefreshToken == "" {
		t.Fatalf("oauth password grant: %d %+v %v", resp.StatusCode, body, err)
	}
	_, err = remote.Image(ref, remote.WithAuth(authn.FromConfig(authn.AuthConfig{IdentityToken: body.RefreshToken})))
	if err != nil {
		t.Fatalf("pull with a refresh token: %v", err)
	}
}

func TestAuthModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		auth authn.Authenticator
	}{
		{"basic", []Option{WithCredentials("u", "p"), WithBasicChallenge()}, &authn.Basic{Username: "u", Password: "p"}},
		{"none", []Option{WithNoAuth()}, authn.Anonymous},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, tc.opts...)
			img := s.PushRandomImage(t, "x/y", "v1", 1, 100)
			ref, _ := name.ParseReference(s.Ref("x/y", "v1"))
			got, err := remote.Image(ref, remote.WithAuth(tc.auth))
			if err != nil {
				t.Fatal(err)
			}
			if Digest(t, got) != Digest(t, img) {
				t.Fatal("digest differs")
			}
			if s.TokenRequests() != 0 {
				t.Errorf("token requests %d", s.TokenRequests())
			}
		})
	}
}

func TestContentHelpers(t *testing.T) {
	s := Start(t)
	oci := s.PushRandomOCIImage(t, "oci/img", "v1", 2, 500)
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	idx := s.PushRandomIndex(t, "multi/arch", "latest", plats, 1, 200)
	ml := s.PushRandomManifestList(t, "multi/list", "latest", plats[:1], 1, 200)
	big, bigDigest := s.PushLargeBlobImage(t, "big/one", "v1", 3<<20+7)

	check := func(repo, tag string, want digest.Digest, wantMT types.MediaType) {
		t.Helper()
		d, err := remote.Head(s.ref(t, repo, tag))
		if err != nil {
			t.Fatal(err)
		}
		if digest.Digest(d.Digest.String()) != want || d.MediaType != wantMT {
			t.Fatalf("%s:%s = %s %s, want %s %s", repo, tag, d.Digest, d.MediaType, want, wantMT)
		}
	}
	check("oci/img", "v1", Digest(t, oci), types.OCIManifestSchema1)
	check("multi/arch", "latest", Digest(t, idx), types.OCIImageIndex)
	check("multi/list", "latest", Digest(t, ml), types.DockerManifestList)
	check("big/one", "v1", Digest(t, big), types.DockerManifestSchema2)

	cf, _ := oci.Manifest()
	if cf.Config.MediaType != types.OCIConfigJSON || cf.Layers[0].MediaType != types.OCILayer {
		t.Errorf("OCI image has %s / %s", cf.Config.MediaType, cf.Layers[0].MediaType)
	}

	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Manifests[1].Platform == nil || im.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index %+v", im.Manifests)
	}
	child, err := remote.Image(s.ref(t, "multi/arch", im.Manifests[1].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := child.ConfigFile(); cfg.Architecture != "arm64" || cfg.Variant != "v8" {
		t.Errorf("child config %s/%s", cfg.Architecture, cfg.Variant)
	}

	// The large layer: same bytes as LargeBlobReader, served by GET.
	tok, _ := token(t, s, "", "", "repository:big/one:pull")
	resp := get(t, http.MethodGet, s.URL()+"/v2/big/one/blobs/"+bigDigest.String(), tok)
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != 3<<20+7 || digest.NewDigest(digest.SHA256, h) != bigDigest {
		t.Fatalf("large blob: %d bytes, err %v", n, err)
	}
	h.Reset()
	_, _ = io.Copy(h, LargeBlobReader("big/one:v1", 3<<20+7))
	if digest.NewDigest(digest.SHA256, h) != bigDigest {
		t.Fatal("LargeBlobReader is not deterministic")
	}

	// Tag moves a tag.
	s.Tag(t, "oci/img", "latest", oci)
	s.Tag(t, "multi/arch", "v1", idx)
	check("oci/img", "latest", Digest(t, oci), types.OCIManifestSchema1)
	check("multi/arch", "v1", Digest(t, idx), types.OCIImageIndex)
}

// pushOne pushes a one-layer image and returns a pull token for repo, the
// blob URL of its layer and the layer's bytes.
func pushOne(t *testing.T, s *Server, repo string, size int64) (tok, blobURL string, content []byte, d digest.Digest) {
	t.Helper()
	img := s.PushRandomImage(t, repo, "v1", 1, size)
	d = LayerDigests(t, img)[0]
	tok, _ = token(t, s, "", "", "repository:"+repo+":pull")
	s.Reset()
	return tok, s.URL() + "/v2/" + repo + "/blobs/" + d.String(), LayerBytes(t, img, 0), d
}

func TestRange(t *testing.T) {
	s := Start(t)
	tok, u, content, _ := pushOne(t, s, "r", 5000)
	size := int64(len(content))
	for _, tc := range []struct {
		rng        string
		status     int
		start, end int64
	}{
		{"", 200, 0, size - 1},
		{"bytes=100-", 206, 100, size - 1},
		{"bytes=100-199", 206, 100, 199},
		{"bytes=-10", 206, size - 10, size - 1},
		{"bytes=0-99999", 206, 0, size - 1},
		{"bytes=0-1,5-6", 200, 0, size - 1},
		{fmt.Sprintf("bytes=%d-", size), 416, 0, 0},
	} {
		resp := get(t, http.MethodGet, u, tok, "Range", tc.rng)
		if resp.StatusCode != tc.status {
			t.Fatalf("%q: status %d, want %d", tc.rng, resp.StatusCode, tc.status)
		}
		if tc.status == 416 {
			if resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", size) {
				t.Errorf("416 Content-Range %q", resp.Header.Get("Content-Range"))
			}
			continue
		}
		if tc.status == 206 {
			if want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, size); resp.Header.Get("Content-Range") != want {
				t.Errorf("%q: Content-Range %q, want %q", tc.rng, resp.Header.Get("Content-Range"), want)
			}
		}
		if got := readAll(t, resp.Body); !bytes.Equal(got, content[tc.start:tc.end+1]) {
			t.Errorf("%q: body differs (%d bytes)", tc.rng, len(got))
		}
	}
}

func TestFaults(t *testing.T) {
	s := Start(t)
	tok, u, content, d := pushOne(t, s, "f", 100_000)

	t.Run("status", func(t *testing.T) {
		s.SetStatus(http.StatusTooManyRequests, "7")
		resp := get(t, http.MethodGet, s.URL()+"/v2/f/manifests/v1", tok)
		b := readAll(t, resp.Body)
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || !bytes.Contains(b, []byte("TOOMANYREQUESTS")) {
			t.Fatalf("429: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		s.SetStatus(http.StatusServiceUnavailable, "")
		if resp := get(t, http.MethodHead, u, tok); resp.StatusCode != 503 {
			t.Fatalf("503: %d", resp.StatusCode)
		}
		s.SetStatus(0, "")
		if resp := get(t, http.MethodGet, u, tok); resp.StatusCode != 200 {
			t.Fatalf("cleared: %d", resp.StatusCode)
		}
	})
	t.Run("down", func(t *testing.T) {
		s.Reset()
		s.SetDown(true)
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("down: got status %d", resp.StatusCode)
		}
		if s.BlobGETs(d) == 0 {
			t.Error("dropped request not counted")
		}
		if _, code := token(t, s, "", ""); code != 200 {
			t.Errorf("token server down too: %d", code)
		}
		s.SetDown(false)
		if resp := get(t, http.MethodGet, u, tok); resp.StatusCode != 200 {
			t.Fatalf("up again: %d", resp.StatusCode)
		}
	})
	t.Run("latency", func(t *testing.T) {
		s.SetLatency(100 * time.Millisecond)
		start := time.Now()
		get(t, http.MethodGet, s.URL()+"/v2/", tok)
		if el := time.Since(start); el < 100*time.Millisecond {
			t.Fatalf("latency %v", el)
		}
		s.SetLatency(0)
	})
	t.Run("cut", func(t *testing.T) {
		s.CutBlobsAfter(1000)
		resp := get(t, http.MethodGet, u, tok)
		b, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 1000 || !bytes.Equal(b, content[:1000]) {
			t.Fatalf("cut: %d bytes, err %v", len(b), err)
		}
		// The cut counts bytes of the response, also for a Range request.
		resp = get(t, http.MethodGet, u, tok, "Range", "bytes=500-")
		b, err = io.ReadAll(resp.Body)
		if err == nil || len(b) != 1000 || !bytes.Equal(b, content[500:1500]) {
			t.Fatalf("cut range: %d bytes, err %v", len(b), err)
		}
		s.CutBlobsAfter(-1)
		if b := readAll(t, get(t, http.MethodGet, u, tok).Body); !bytes.Equal(b, content) {
			t.Fatal("cleared cut: body differs")
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		s.CorruptBlobs(true)
		b := readAll(t, get(t, http.MethodGet, u, tok).Body)
		if len(b) != len(content) || bytes.Equal(b, content) || !bytes.Equal(b[:len(b)-1], content[:len(content)-1]) {
			t.Fatal("corrupt: want the same length with the last byte flipped")
		}
		b = readAll(t, get(t, http.MethodGet, u, tok, "Range", "bytes=10-").Body)
		if bytes.Equal(b, content[10:]) {
			t.Fatal("corrupt range: not corrupted")
		}
		s.CorruptBlobs(false)
		if b := readAll(t, get(t, http.MethodGet, u, tok).Body); !bytes.Equal(b, content) {
			t.Fatal("cleared corrupt: body differs")
		}
	})
}

func TestGate(t *testing.T) {
	s := Start(t)
	tok, u, content, d := pushOne(t, s, "g", 100_000)
	g := s.Gate(d).SetHeadBytes(1234)

	type result struct {
		body []byte
		err  error
	}
	headRead := make(chan []byte, 1)
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		head := make([]byte, 1234)
		_, err = io.ReadFull(resp.Body, head)
		headRead <- head
		rest, err2 := io.ReadAll(resp.Body)
		done <- result{append(head, rest...), errors.Join(err, err2)}
	}()

	select {
	case <-g.Arrived():
	case <-time.After(10 * time.Second):
		t.Fatal("request never arrived")
	}
	head := <-headRead
	if !bytes.Equal(head, content[:1234]) {
		t.Fatal("head bytes differ")
	}
	select {
	case r := <-done:
		t.Fatalf("body finished before Open: %d bytes, %v", len(r.body), r.err)
	case <-time.After(50 * time.Millisecond):
	}
	g.Open()
	r := <-done
	if r.err != nil || !bytes.Equal(r.body, content) {
		t.Fatalf("after Open: %d bytes, %v", len(r.body), r.err)
	}
	if g.Requests() != 1 || s.BlobGETs(d) != 1 {
		t.Errorf("requests %d, blob GETs %d", g.Requests(), s.BlobGETs(d))
	}
	// An open gate lets later requests through.
	if b := readAll(t, get(t, http.MethodGet, u, tok).Body); !bytes.Equal(b, content) || g.Requests() != 2 {
		t.Fatal("open gate held a request")
	}

	// A held request does not block Close.
	g2 := s.Gate(d)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-g2.Arrived()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a held request")
	}
}

func TestPathInfo(t *testing.T) {
	for _, tc := range []struct{ path, repo, blob string }{
		{"/v2/", "", ""},
		{"/v2/_catalog", "", ""},
		{"/v2/library/alpine/manifests/3.20", "library/alpine", ""},
		{"/v2/a/blobs/sha256:abc", "a", "sha256:abc"},
		{"/v2/a/blobs/b/blobs/sha256:abc", "a/blobs/b", "sha256:abc"},
		{"/v2/a/b/blobs/uploads/", "a/b", ""},
		{"/v2/a/b/blobs/uploads/123", "a/b", ""},
		{"/v2/a/tags/list", "a", ""},
	} {
		repo, blob := pathInfo(tc.path)
		if repo != tc.repo || blob != tc.blob {
			t.Errorf("pathInfo(%q) = %q, %q; want %q, %q", tc.path, repo, blob, tc.repo, tc.blob)
		}
	}
}

func BenchmarkPushLargeBlobImage(b *testing.B) {
	s := Start(b)
	const size = 64 << 20
	b.SetBytes(size)
	for i := range b.N {
		s.PushLargeBlobImage(b, "bench/big", fmt.Sprint(i), size)
	}
}
