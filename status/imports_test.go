package status

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: figures and a page; no HTTP server, no other project package.
func TestImports(t *testing.T) {
	depcheck.Allow(t)
}
