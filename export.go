package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
)

// Export writes cached images to an OCI image layout archive (see package
// archive), streaming from the cache: directly when the data dir is free,
// else through the running server's /_regmirror/blobs/, which serves the
// cache only and never asks upstream.
//
// A mirror often holds only some platforms of a multi-platform image (what
// was pulled or preloaded). Such an index is exported whole, with the
// child manifests the cache has and their graphs, and its index.json
// entry is annotated io.github.regmirror.partial=true; regmirror import
// accepts it, and a pull by tag from the importing mirror then works for
// the exported platforms and answers 404 for the others. skopeo and crane
// read the exported platforms of such an archive, not a copy --all of it.
// An image whose own config or layers are not all cached (or an index
// with none of its children) is reported and skipped: no client could
// pull it. Named images that cannot be exported make the command fail
// after the archive is written with the others; with --all they are only
// reported.
func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write cached images to an OCI image layout archive (for import on another mirror, skopeo or crane)",
		ArgsUsage: "[IMAGE...]",
		Flags: manageFlags(fileFlag,
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "the archive to write (a tar file)"},
			&cli.BoolFlag{Name: "all", Usage: "export every cached tag and every image pinned by digest"},
		),
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	refs, err := imageArgs(c)
	if err != nil {
		return err
	}
	all := c.Bool("all")
	switch {
	case all && len(refs) > 0:
		return errors.New("export: name images or give --all, not both")
	case !all && len(refs) == 0:
		return errors.New("export: no images: name them as arguments, with --file, or give --all")
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachCache, func(ctx context.Context, ca *target) error {
		ops, src, where := ca.Ops, ca.Blobs, ca.Where
		imgs, skipped, err := exportPlan(ctx, ops, src, refs, all)
		if err != nil {
			return err
		}
		for _, s := range skipped {
			fmt.Fprintf(c.App.Writer, "skipped %s\n", s)
		}
		if len(imgs) == 0 {
			return errors.New("export: nothing to export")
		}
		stats, err := writeArchive(ctx, c.String("out"), src, imgs, c.App.ErrWriter)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote %s: %d images, %d blobs, %s (blobs %s) from %s\n", c.String("out"),
			stats.Images, stats.Blobs, humanize.IBytes(uint64(stats.Bytes)), humanize.IBytes(uint64(stats.BlobBytes)), where)
		if len(skipped) > 0 && !all {
			return fmt.Errorf("export: %d of %d images could not be exported", len(skipped), len(refs))
		}
		return nil
	})
}

// exportItem is one image to write, with the bytes its cached graph holds.
type exportItem struct {
	archive.Image
	bytes int64
}

// exportPlan resolves the images against the cache and checks each graph;
// skipped says why an image was left out.
func exportPlan(ctx context.Context, ops admin.Ops, src archive.BlobSource, refs []imageref.Ref, all bool) ([]exportItem, []string, error) {
	cached, err := ops.Images(ctx)
	if err != nil {
		return nil, nil, err
	}
	byRef := map[string]admin.Image{}
	for _, im := range cached {
		byRef[im.Ref] = im
	}
	var want []archive.Image
	var skipped []string
	if all {
		for _, im := range cached {
			want = append(want, archive.Image{Ref: im.Ref, Digest: im.Digest, MediaType: im.MediaType, Partial: true})
		}
	}
	for _, r := range refs {
		if r.Digest != "" {
			want = append(want, archive.Image{Ref: r.String(), Digest: r.Digest, Partial: true})
			continue
		}
		im, ok := byRef[r.String()]
		if !ok {
			skipped = append(skipped, r.String()+": not cached")
			continue
		}
		want = append(want, archive.Image{Ref: im.Ref, Digest: im.Digest, MediaType: im.MediaType, Partial: true})
	}
	seen := map[string]bool{}
	var out []exportItem
	for _, img := range want {
		if seen[img.Ref] {
			continue
		}
		seen[img.Ref] = true
		n, err := cachedGraph(ctx, src, img)
		if err != nil {
			skipped = append(skipped, img.Ref+": "+err.Error())
			continue
		}
		out = append(out, exportItem{Image: img, bytes: n})
	}
	return out, skipped, nil
}

// cachedGraph checks that img's graph is complete in src except for index
// children never cached, and sums its blob sizes.
func cachedGraph(ctx context.Context, src archive.BlobSource, img archive.Image) (int64, error) {
	var total int64
	manifests, missing := 0, 0
	err := archive.WalkCached(ctx, src, img.Digest, img.MediaType, func(desc v1.Descriptor) error {
		total += desc.Size
		if desc.MediaType.IsIndex() || desc.MediaType.IsImage() || desc.MediaType == types.OCIManifestSchema1 {
			if desc.MediaType.IsImage() {
				manifests++
			}
			return nil
		}
		rc, _, err := src.Open(digest.Digest(desc.Digest.String()))
		if errors.Is(err, os.ErrNotExist) {
			if archive.Foreign(desc) {
				return nil
			}
			return fmt.Errorf("incomplete in the cache: blob %s (%s) is missing", desc.Digest, desc.MediaType)
		}
		if err != nil {
			return err
		}
		return rc.Close()
	}, func(v1.Descriptor) { missing++ })
	if err != nil {
		return 0, err
	}
	if manifests == 0 && missing > 0 {
		return 0, fmt.Errorf("incomplete in the cache: none of the index's %d platforms is cached", missing)
	}
	return total, nil
}

// writeArchive writes to a temporary file beside path and renames it into
// place on success, so that path never holds a partial archive.
func writeArchive(ctx context.Context, path string, src archive.BlobSource, items []exportItem, barOut io.Writer) (archive.WriteStats, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return archive.WriteStats{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var total int64
	imgs := make([]archive.Image, len(items))
	for i, it := range items {
		imgs[i] = it.Image
		total += it.bytes
	}
	pg := newProgress(barOut)
	b := pg.bar(fmt.Sprintf("%s (%d images)", filepath.Base(path), len(imgs)), 0)
	b.grow(total)
	var last int64
	stats, err := archive.Write(ctx, f, src, imgs, func(n int64) { b.add(n - last); last = n })
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		b.fail()
		pg.wait()
		return stats, fmt.Errorf("export: %w", err)
	}
	b.done()
	pg.wait()
	return stats, nil
}
