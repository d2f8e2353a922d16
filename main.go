// Command regmirror is a pull-through caching mirror for container
// registries. See README.md.
//
// Package main is the composition root: flags and config (cli.go,
// config.go) become each component's options (options.go), and serve.go,
// app.go and the commands wire the components. It holds no registry
// client, no Badger and no fasthttp (internal/depcheck asserts it).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newCLI(os.Stdout, os.Stderr).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "regmirror:", err)
		os.Exit(1)
	}
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

var errShutdownTimeout = errors.New("shutdown did not finish in time")

// withTimeout is a context for the graceful end of something.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
