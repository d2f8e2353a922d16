package cache

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: storage only; nothing of HTTP, registries or the project.
// x/time/rate paces verification and the scrub.
func TestImports(t *testing.T) {
	depcheck.Allow(t, "github.com/dgraph-io/badger/v4/...", "github.com/opencontainers/go-digest", "golang.org/x/time/rate",
		"github.com/regmirror/regmirror/imageref")
}
