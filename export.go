package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/imageref"
)

// exportCommand writes cached images to an OCI image layout archive (see
// package archive), streaming from the cache: directly when the data dir
// is free, else through the running server's /_regmirror/blobs/, which
// serves the cache only and never asks upstream.
//
// A partially cached index is exported with the platforms the cache has,
// annotated io.github.regmirror.partial=true (see airgap.Plan); regmirror
// import accepts it. Named images that cannot be exported make the command
// fail after the archive is written with the others; with --all they are
// only reported.
func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write cached images to an OCI image layout archive (for regmirror import on another mirror, or crane)",
		ArgsUsage: "[IMAGE...]",
		Flags: manageFlags(fileFlag,
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "the archive to write (a tar file)"},
			&cli.BoolFlag{Name: "all", Usage: "export every cached tag and every image pinned by digest"},
		),
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	refs, all, err := imageSelection(c, "export", c.Args().Slice(), "as arguments")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachCache, func(ctx context.Context, t *target) error {
		items, skipped, err := planImages(ctx, c, t, refs, all, "export: nothing to export")
		if err != nil {
			return err
		}
		stats, err := airgap.WriteArchive(ctx, c.String("out"), t.Blobs, items, newProgress(c.App.ErrWriter))
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s: %d images, %d blobs, %s (blobs %s) from %s\n", c.String("out"),
			stats.Images, stats.Blobs, humanize.IBytes(uint64(stats.Bytes)), humanize.IBytes(uint64(stats.BlobBytes)), t.Where)
		if len(skipped) > 0 && !all {
			return fmt.Errorf("export: %d of %d images could not be exported", len(skipped), len(refs))
		}
		return nil
	})
}

// planImages plans the cached images a command names (or all), printing
// those it skips; nothing left to do is an error with the command's
// message.
func planImages(ctx context.Context, c *cli.Context, t *target, refs []imageref.Ref, all bool, nothing string) (items []airgap.Item, skipped []string, err error) {
	items, skipped, err = airgap.Plan(ctx, t.Ops, t.Blobs, refs, all)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range skipped {
		fmt.Fprintf(c.App.Writer, "skipped %s\n", s)
	}
	if len(items) == 0 {
		return nil, nil, errors.New(nothing)
	}
	return items, skipped, nil
}
