package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/internal/stack"
)

// Import reads an OCI image layout archive (regmirror export's, or one
// written by skopeo, crane or docker save since Docker 25) into the cache,
// verifying every blob as it streams. Tags, repository links and pins are
// written only after the whole archive has been read and every image's
// graph checked; a corrupt, truncated or incomplete archive is refused and
// the blobs this import added are deleted, so the cache is left as it was.
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
	cfg, log, err := setup(c)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	st, err := openStack(cfg, log)
	if errors.Is(err, cache.ErrBusy) {
		return fmt.Errorf("import: the data dir %s is in use by a running regmirror; stop it, run the import, then start it again", cfg.DataDir)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	pg := newProgress(c.App.ErrWriter)
	b := pg.bar("import "+path, 0)
	b.grow(size)
	var last int64
	start := time.Now()
	imgs, added, stats, err := archive.Read(ctx, f, importSink{st.Store}, func(n int64) { b.add(n - last); last = n })
	if err == nil {
		err = recordImported(ctx, st, imgs, c.App.Writer)
	}
	if err != nil {
		b.fail()
		pg.wait()
		removed := rollback(st.Store, added)
		return fmt.Errorf("import %s refused: %w (the %d blobs it had added were removed; the cache is as it was)", path, err, removed)
	}
	b.done()
	pg.wait()
	fmt.Fprintf(c.App.Writer, "imported %s into %s: %d images, %d blobs added (%s), %d already cached, %s read in %s\n",
		path, cfg.DataDir, stats.Images, stats.Blobs, humanize.IBytes(uint64(addedBytes(st.Store, added))), stats.SkippedExisting,
		humanize.IBytes(uint64(stats.Bytes)), time.Since(start).Round(time.Millisecond))
	return nil
}

// importSink stores an archive's blobs in the cache, verified by the
// cache's writer as well as by archive.Read.
type importSink struct{ st *cache.Store }

var (
	_ archive.BlobSink        = importSink{}
	_ archive.MediaTypeSetter = importSink{}
)

func (s importSink) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	return admin.Source{Store: s.st}.Open(d)
}

func (s importSink) Has(d digest.Digest) bool {
	_, err := s.st.Stat(d)
	return err == nil
}

func (s importSink) Put(d digest.Digest, size int64, mediaType string, r io.Reader) error {
	w, err := s.st.Create(d, mediaType)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Cancel()
		return err
	}
	_, err = w.Commit(size)
	return err
}

func (s importSink) SetMediaType(d digest.Digest, mediaType string) error {
	return s.st.SetMediaType(d, mediaType)
}

// recordImported tags, links and pins each imported image.
func recordImported(ctx context.Context, st *stack.Stack, imgs []archive.ImportedImage, out io.Writer) error {
	now := time.Now()
	for _, img := range imgs {
		mediaType := img.MediaType
		if info, err := st.Store.Stat(img.Digest); err == nil && mediaType == "" {
			mediaType = info.MediaType
		}
		digests, err := st.Ops.Closure(ctx, img.Digest, nil)
		if err != nil {
			return err
		}
		pinName := img.Digest.String()
		ref, rerr := imageref.Parse(img.Ref)
		if img.Ref != "" && rerr == nil {
			pinName = ref.String()
			if ref.Tag != "" && ref.Digest == "" {
				rec := cache.TagRecord{Digest: img.Digest, MediaType: mediaType, CheckedAt: now}
				if err := st.Store.SetTag(ref.Registry, ref.Repo, ref.Tag, rec); err != nil {
					return err
				}
			}
			for _, d := range digests {
				if err := st.Store.AddLink(ref.Registry, ref.Repo, d); err != nil {
					return err
				}
			}
		}
		if err := st.Ops.Pin(ctx, pinName, digests); err != nil {
			return err
		}
		note := ""
		if img.MissingChildren > 0 {
			note = fmt.Sprintf(" (%d platforms not in the archive)", img.MissingChildren)
		}
		if img.Ref == "" || rerr != nil {
			note += " (no usable reference name: pinned by digest, not tagged)"
		}
		fmt.Fprintf(out, "imported %s %s: %d blobs pinned%s\n", pinName, img.Digest, len(digests), note)
	}
	return nil
}

// rollback deletes the blobs an import added; it returns how many.
func rollback(st *cache.Store, added []digest.Digest) int {
	n := 0
	for _, d := range added {
		if err := st.Delete(d); err == nil {
			n++
		}
	}
	return n
}

func addedBytes(st *cache.Store, added []digest.Digest) int64 {
	var n int64
	for _, d := range added {
		if info, err := st.Stat(d); err == nil {
			n += info.Size
		}
	}
	return n
}
