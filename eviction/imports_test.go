package eviction

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the policy needs nothing of the project, only size parsing.
func TestImports(t *testing.T) {
	depcheck.Allow(t, "github.com/dustin/go-humanize")
}
