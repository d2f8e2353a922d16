package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/airgap"
)

// importCommand reads an OCI image layout archive (regmirror export's, or
// one written by skopeo, crane or docker save since Docker 25) into the
// cache: see airgap.Import.
//
// Import works on a free data dir only. A running server holds the data
// dir; rather than stream a multi-GiB body through it (the proxy caps
// request bodies, and management requests are small by design), import
// refuses and says to stop the server, import, and start it again.
func importCommand() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "read an OCI image layout archive into the cache, tag and pin its images",
		ArgsUsage: "ARCHIVE",
		Description: "The data dir must be free: stop the server first. Images named in the archive\n" +
			"(org.opencontainers.image.ref.name or io.containerd.image.name) are tagged and pinned\n" +
			"under their full reference; unnamed ones are pinned under their digest.",
		Flags:  commonFlags(),
		Action: runImport,
	}
}

func runImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("import: name one archive")
	}
	path := c.Args().First()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachDataDir, func(ctx context.Context, t *target) error {
		// The command prints one line per image; the cache management's
		// own info line (a "pinned" per image) would say each image twice.
		t.Stack.Ops.Logger = quietLogger(t.Config, t.Log)
		return importArchive(ctx, c, t, f, path)
	})
}

// importArchive reads f into t's cache and prints what it imported.
func importArchive(ctx context.Context, c *cli.Context, t *target, f *os.File, path string) error {
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	pg := newProgress(c.App.ErrWriter)
	b := pg.bar("import " + path)
	b.Grow(size)
	var last int64
	start := time.Now()
	res, err := airgap.Import(ctx, f, t.Stack.Store, t.Stack.Ops, func(n int64) { b.Add(n - last); last = n })
	if err != nil {
		b.Fail()
		pg.Wait()
		return fmt.Errorf("import %s %w", path, err)
	}
	b.Done()
	pg.Wait()
	for _, im := range res.Images {
		note := ""
		if im.MissingChildren > 0 {
			note = fmt.Sprintf(" (%d platforms not in the archive)", im.MissingChildren)
		}
		if !im.Tagged {
			note += " (no usable reference name: pinned by digest, not tagged)"
		}
		fmt.Fprintf(c.App.Writer, "imported %s %s: %d blobs pinned%s\n", im.Name, im.Digest, im.Blobs, note)
	}
	fmt.Fprintf(c.App.Writer, "imported %s into %s: %d images, %d blobs added (%s), %d already cached, %s read in %s\n",
		path, t.Where, res.Stats.Images, res.Stats.Blobs, humanize.IBytes(uint64(res.AddedBytes)), res.Stats.SkippedExisting,
		humanize.IBytes(uint64(res.Stats.Bytes)), time.Since(start).Round(time.Millisecond))
	return nil
}
