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
		"github.com/google/go-containerregistry/pkg/v1",        // push.go: the layer and hash types remote.Pusher takes
		"github.com/google/go-containerregistry/pkg/v1/remote", // push.go: push-to's writes to a site registry
		"github.com/google/go-containerregistry/pkg/v1/remote/transport",
		"github.com/google/go-containerregistry/pkg/v1/types",
		"github.com/opencontainers/go-digest",
		"github.com/regmirror/regmirror/imageref",
	)
}
