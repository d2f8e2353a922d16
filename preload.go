package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/imageref"
)

// preloadCommand: see airgap.Preload. It pulls through the mirror reach
// finds (reachMirror): a server started in this process on 127.0.0.1:0
// when the data dir is free, else the server that holds it, or one on
// another box (the remote-admin flags).
func preloadCommand() *cli.Command {
	return &cli.Command{
		Name:      "preload",
		Usage:     "fetch images (all their layers, signatures and referrers) into the cache and pin them",
		ArgsUsage: "[IMAGE...]",
		Description: "Images are named as arguments and/or with --file. By default, of a multi-platform image\n" +
			"preload fetches linux/amd64 and the host's own platform (linux/" + runtime.GOARCH + " here): what\n" +
			"a site usually runs, without the cost of every platform. Works on a free data dir (a\n" +
			"temporary server on loopback is started) or through the running server (see --server).",
		Flags: append(manageFlags(fileFlag,
			&cli.StringFlag{Name: "platform", Usage: "platforms to fetch of multi-platform images, e.g. linux/amd64,linux/arm64/v8 (default linux/amd64 and the host's)"},
			&cli.BoolFlag{Name: "all-platforms", Usage: "fetch every platform of multi-platform images"},
		), upstreamFlags()...),
		Action: runPreload,
	}
}

func runPreload(c *cli.Context) error {
	refs, err := imageArgs(c)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return errors.New("preload: no images: name them as arguments or with --file")
	}
	plats, err := airgap.ChoosePlatforms(c.String("platform"), c.Bool("all-platforms"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachMirror, func(ctx context.Context, t *target) error {
		res, err := preloadThrough(ctx, t, refs, plats, c.App.Writer, newProgress(c.App.ErrWriter))
		if err != nil {
			return err
		}
		if res.Failed > 0 {
			return fmt.Errorf("preload: %d of %d images failed", res.Failed, len(refs))
		}
		return nil
	})
}

// preloadThrough preloads refs through the mirror t reaches (t.URL) and
// pins them there.
func preloadThrough(ctx context.Context, t *target, refs []imageref.Ref, plats []v1.Platform, out io.Writer, prog airgap.Progress) (airgap.PreloadResult, error) {
	p, err := airgap.NewPuller(t.mirror())
	if err != nil {
		return airgap.PreloadResult{}, err
	}
	defer p.Close() // the server may be shutting down next
	return airgap.Preload(ctx, p, airgap.PreloadOptions{Refs: refs, Platforms: plats, Pins: t.Ops, Where: t.Where, Out: out, Progress: prog}), nil
}

// mirror is t as airgap pulls through it.
func (t *target) mirror() airgap.Mirror {
	return airgap.Mirror{URL: t.URL, Transport: t.PullTransport(), DefaultRegistry: t.Config.DefaultRegistry}
}

// quietLogger keeps a server started for a command from logging every
// request at info level over the command's own output.
func quietLogger(cfg config, log *slog.Logger) *slog.Logger {
	if strings.EqualFold(cfg.LogLevel, "debug") {
		return log
	}
	return slog.New(&minLevel{Handler: log.Handler(), min: slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m *minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m *minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return &minLevel{Handler: m.Handler.WithAttrs(a), min: m.min}
}

func (m *minLevel) WithGroup(g string) slog.Handler {
	return &minLevel{Handler: m.Handler.WithGroup(g), min: m.min}
}
