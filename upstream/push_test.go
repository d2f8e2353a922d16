package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// refusingTransport fails the test if anything is sent: the checks under
// test must refuse before the network.
type refusingTransport struct{ t *testing.T }

func (r refusingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.t.Errorf("a request was sent: %s %s", req.Method, req.URL)
	return nil, errors.New("refused by the test")
}

// TestPusherValidatesBeforeSending (invariant 6): push-to's client refuses
// a repository name outside the grammar, a manifest whose body is not the
// digest it is written under, and a target that is not a bare
// http(s)://host[:port], all before any request.
func TestPusherValidatesBeforeSending(t *testing.T) {
	for _, bad := range []string{"https://site/v2", "site:5000", "ftp://site", "https://u:p@site", "https://site/?x=1", "https://site#x"} {
		if _, err := NewPusher(PushOptions{URL: bad, Transport: refusingTransport{t}}); err == nil {
			t.Errorf("NewPusher(%q) accepted the target", bad)
		}
	}
	p, err := NewPusher(PushOptions{URL: "https://registry.site:5000", Transport: refusingTransport{t}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := []byte(`{"schemaVersion":2}`)
	open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x")), nil }
	for _, repo := range []string{"../etc", "A/B", "a//b", "", "a/" + strings.Repeat("b", 300)} {
		if err := p.PutBlob(ctx, repo, digest.FromString("x"), 1, "application/octet-stream", open); !errors.Is(err, ErrInvalidName) {
			t.Errorf("PutBlob to repository %q: %v, want ErrInvalidName", repo, err)
		}
		if err := p.PutManifest(ctx, repo, "latest", "application/vnd.oci.image.manifest.v1+json", body); !errors.Is(err, ErrInvalidName) {
			t.Errorf("PutManifest to repository %q: %v, want ErrInvalidName", repo, err)
		}
	}
	other := digest.FromString("another manifest").String()
	if err := p.PutManifest(ctx, "library/app", other, "application/vnd.oci.image.manifest.v1+json", body); err == nil {
		t.Error("PutManifest wrote a body under a digest it does not have")
	}
	if err := p.PutBlob(ctx, "library/app", "sha256:short", 1, "application/octet-stream", open); err == nil {
		t.Error("PutBlob accepted a malformed digest")
	}
}

// TestPusherStaysOnHTTPS: an https push target is written only over https.
// The target redirects to, or names as its token realm, a plain-http
// canary; the canary sees nothing and the push fails. (go-containerregistry
// refuses the realm itself; the redirect, which Go's client would follow,
// is refused by httpsOnly.)
func TestPusherStaysOnHTTPS(t *testing.T) {
	var canaryHits atomic.Int64
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { canaryHits.Add(1) }))
	defer canary.Close()
	type answer = func(w http.ResponseWriter, r *http.Request)
	for name, tc := range map[string]struct {
		answer
		wantRefusal bool
	}{
		"redirect": {func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, canary.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}, true},
		"token realm": {func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+canary.URL+`/token",service="site"`)
			w.WriteHeader(http.StatusUnauthorized)
		}, false},
	} {
		t.Run(name, func(t *testing.T) {
			canaryHits.Store(0)
			target := httptest.NewTLSServer(http.HandlerFunc(tc.answer))
			defer target.Close()
			p, err := NewPusher(PushOptions{URL: target.URL, Username: "site", Password: "secret", Transport: target.Client().Transport})
			if err != nil {
				t.Fatal(err)
			}
			body := []byte(`{"schemaVersion":2}`)
			err = p.PutManifest(context.Background(), "library/app", "latest", "application/vnd.oci.image.manifest.v1+json", body)
			if err == nil || tc.wantRefusal && !errors.Is(err, ErrRefused) {
				t.Errorf("push: %v, want a refusal", err)
			}
			if n := canaryHits.Load(); n != 0 {
				t.Fatalf("the plain-http canary got %d requests", n)
			}
		})
	}
}

// TestPusherCredentialsStayWithTheTarget: push-to's credentials do not
// follow a redirect to another origin, here the same host on another port
// (the registry client's checkRedirect drops them there; push-to's client
// is go-containerregistry's, which adds them per request for the target's
// host and port only).
func TestPusherCredentialsStayWithTheTarget(t *testing.T) {
	var sawAuth atomic.Int64
	var hits, targetAuth atomic.Int64
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawAuth.Add(1)
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer other.Close()
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK) // no token dance: Basic credentials go with every request
			return
		}
		if r.Header.Get("Authorization") != "" {
			targetAuth.Add(1)
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer target.Close()
	p, err := NewPusher(PushOptions{URL: target.URL, Username: "site", Password: "secret", Transport: target.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"schemaVersion":2}`)
	p.PutManifest(context.Background(), "library/app", "latest", "application/vnd.oci.image.manifest.v1+json", body)
	if hits.Load() == 0 || targetAuth.Load() == 0 {
		t.Fatalf("the redirect was followed %d times, the target got credentials %d times: the test tests nothing", hits.Load(), targetAuth.Load())
	}
	if n := sawAuth.Load(); n != 0 {
		t.Fatalf("credentials followed %d redirects to another origin", n)
	}
}
