package access

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: access knows no HTTP server, cache or upstream; bcrypt and
// the rate limiter live here only.
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"golang.org/x/crypto/bcrypt",
		"golang.org/x/time/rate",
	)
}
