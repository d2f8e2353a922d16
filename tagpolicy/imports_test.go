package tagpolicy

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: a leaf; the standard library only.
func TestImports(t *testing.T) {
	depcheck.Allow(t)
}
