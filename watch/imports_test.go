package watch

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: scheduling only; the work is the Warmer's.
func TestImports(t *testing.T) {
	depcheck.Allow(t)
}
