package stack

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the stack wires cache, eviction and admin; nothing above
// them (no proxy, no upstream, no config).
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/dustin/go-humanize",
		"github.com/opencontainers/go-digest",
		"github.com/regmirror/regmirror/admin",
		"github.com/regmirror/regmirror/cache",
		"github.com/regmirror/regmirror/eviction",
		"golang.org/x/sys/windows",
	)
}
