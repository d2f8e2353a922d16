package proxy

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: the proxy owns fasthttp and reaches storage and registries
// only through cache and upstream; the status page's figures live in status;
// the request line's fast formatting is the log format's (internal/logline).
func TestImports(t *testing.T) {
	depcheck.Allow(t,
		"github.com/valyala/fasthttp/...",
		"github.com/opencontainers/go-digest",
		"github.com/prometheus/client_golang/...",
		"golang.org/x/sync/singleflight",
		"github.com/regmirror/regmirror/access",
		"github.com/regmirror/regmirror/cache",
		"github.com/regmirror/regmirror/imageref",
		"github.com/regmirror/regmirror/tagpolicy",
		"github.com/regmirror/regmirror/upstream",
		"github.com/regmirror/regmirror/status",
		"github.com/regmirror/regmirror/internal/logline",
	)
}
