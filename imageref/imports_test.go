package imageref

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: names need no registry client, so that leaf packages (cache,
// archive) can use them.
func TestImports(t *testing.T) {
	depcheck.Allow(t, "github.com/opencontainers/go-digest")
}
