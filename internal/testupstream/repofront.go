package testupstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// RepoFront stands before a Server and gives it what pkg/registry lacks:
// blobs that belong to repositories. A blob HEAD or GET in a repository not
// allowed (AllowBlobs) answers 404 BLOB_UNKNOWN, as distribution does for a
// blob not linked in that repository. SetDown makes every request fail with
// 503. Private-registry tests put it between the mirror and the registry.
type RepoFront struct {
	*httptest.Server
	mu      sync.Mutex
	allowed map[string]bool
	down    bool
	counts  map[string]int // "METHOD <repo> blobs|manifests" → requests
}

// StartRepoFront starts a RepoFront before up; its URL is the registry's.
func StartRepoFront(tb testing.TB, up *Server) *RepoFront {
	tb.Helper()
	target, err := url.Parse(up.URL())
	if err != nil {
		tb.Fatal(err)
	}
	f := &RepoFront{allowed: map[string]bool{}, counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo, kind := splitV2(r.URL.Path)
		f.mu.Lock()
		down, allowed := f.down, f.allowed[repo]
		if repo != "" && r.Header.Get("Authorization") != "" {
			f.counts[r.Method+" "+repo+" "+kind]++
		}
		f.mu.Unlock()
		switch {
		case down:
			http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"down"}]}`, http.StatusServiceUnavailable)
		case kind == "blobs" && !allowed && r.Header.Get("Authorization") != "":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	tb.Cleanup(f.Close)
	return f
}

// AllowBlobs lets repo's requests reach every blob.
func (f *RepoFront) AllowBlobs(repo string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allowed[repo] = true
}

// SetDown makes every request fail with 503 (down) or pass again.
func (f *RepoFront) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Requests counts authorized requests with method for kind ("blobs" or
// "manifests") in repo.
func (f *RepoFront) Requests(method, repo, kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[method+" "+repo+" "+kind]
}

// splitV2 returns the repository and the kind ("blobs", "manifests", ...)
// of /v2/<repo>/<kind>/<ref>.
func splitV2(p string) (repo, kind string) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 {
		return "", ""
	}
	return strings.Join(parts[:len(parts)-2], "/"), parts[len(parts)-2]
}
