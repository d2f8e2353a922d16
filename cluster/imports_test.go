package cluster

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the cluster talks to its peers with net/http and hands the
// proxy upstream's blob type; it knows no proxy, cache or HTTP server
// (imageref: how a peer's path names a registry).
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/opencontainers/go-digest",
		"github.com/regmirror/regmirror/imageref",
		"github.com/regmirror/regmirror/upstream",
	)
}
