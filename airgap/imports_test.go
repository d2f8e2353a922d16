package airgap

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: air-gap work through the project's own packages; no
// registry client library, no HTTP server, no Badger of its own.
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/dustin/go-humanize",
		"github.com/google/go-containerregistry/pkg/v1",       // manifest, index and platform types
		"github.com/google/go-containerregistry/pkg/v1/types", // media types
		"github.com/opencontainers/go-digest",
		"golang.org/x/sync/errgroup",
		"github.com/regmirror/regmirror/admin",
		"github.com/regmirror/regmirror/archive",
		"github.com/regmirror/regmirror/cache",
		"github.com/regmirror/regmirror/imageref",
		"github.com/regmirror/regmirror/proxy", // CacheHeader: what the mirror fetched and what it had
		"github.com/regmirror/regmirror/upstream",
	)
}
