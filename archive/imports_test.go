package archive

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the format layer knows no cache, server or client.
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/opencontainers/go-digest",
		"github.com/google/go-containerregistry/pkg/v1",
		"github.com/google/go-containerregistry/pkg/v1/types",
		"github.com/regmirror/regmirror/imageref",
	)
}
