package main

import (
	"testing"

	"github.com/regmirror/regmirror/internal/depcheck"
)

// TestImports: package main is the composition root. It turns flags and
// config into each component's options and wires them; the registry
// client stays in upstream, Badger in cache, fasthttp in proxy.
func TestImports(t *testing.T) {
	depcheck.Deny(t,
		"github.com/google/go-containerregistry/pkg/v1/remote/...", // remote and remote/transport: a registry client
		"github.com/dgraph-io/badger/...",
		"github.com/valyala/fasthttp/...",
	)
}
