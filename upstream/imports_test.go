package upstream

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: talking to registries only; no project package, no fasthttp,
// no Badger.
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"code.dny.dev/ssrf",                    // the address guard's deny lists (IANA special-purpose registries)
		"github.com/docker/cli/cli/config/...", // Docker config.json and credential helpers, as authn reads them
		"github.com/google/go-containerregistry/pkg/authn",
		"github.com/google/go-containerregistry/pkg/name",
		"github.com/google/go-containerregistry/pkg/v1/remote/transport",
		"github.com/opencontainers/go-digest",
		"github.com/regmirror/regmirror/imageref",
	)
}
