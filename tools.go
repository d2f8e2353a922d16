//go:build tools

package main

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/dustin/go-humanize"
	_ "github.com/google/go-containerregistry/pkg/registry"
	_ "github.com/google/go-containerregistry/pkg/v1/layout"
	_ "github.com/google/go-containerregistry/pkg/v1/random"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/opencontainers/go-digest"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/urfave/cli/v2"
	_ "github.com/valyala/fasthttp"
	_ "github.com/vbauerster/mpb/v8"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sync/singleflight"
)
