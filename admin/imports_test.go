package admin

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: management sits on the cache, eviction and archive; it
// serves net/http and leaves fasthttp to the proxy.
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/opencontainers/go-digest",
		"github.com/google/go-containerregistry/pkg/v1/...",
		"github.com/regmirror/regmirror/cache",
		"github.com/regmirror/regmirror/eviction",
		"github.com/regmirror/regmirror/archive",
		"github.com/regmirror/regmirror/imageref",
	)
}
