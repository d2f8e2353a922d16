package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"
)

func untar(t testing.TB, archive []byte, dir string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		must(t, err)
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name)) // our own archive: names are known good
		if hdr.Typeflag == tar.TypeDir {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		b, err := io.ReadAll(tr)
		must(t, err)
		must(t, os.WriteFile(p, b, 0o644))
	}
}

// tarDir tars dir with "./"-prefixed names, as `tar -C dir -cf - .` does.
func tarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = "./" + filepath.ToSlash(rel)
		if de.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}))
	must(t, tw.Close())
	return buf.Bytes()
}

// TestReadByGoContainerRegistry: what Write produces is a layout that
// go-containerregistry reads and validates, finding images by ref.name.
func TestReadByGoContainerRegistry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	dir := t.TempDir()
	untar(t, archive, dir)
	ii, err := layout.ImageIndexFromPath(dir)
	must(t, err)
	im, err := ii.IndexManifest()
	must(t, err)
	for _, want := range f.imgs {
		var found *v1.Descriptor
		for i, desc := range im.Manifests {
			if desc.Annotations[AnnotationRefName] == want.Ref {
				found = &im.Manifests[i]
			}
		}
		if found == nil || found.Digest.String() != want.Digest.String() || string(found.MediaType) != want.MediaType {
			t.Fatalf("%s: index entry %+v", want.Ref, found)
		}
		if found.MediaType.IsIndex() {
			child, err := ii.ImageIndex(found.Digest)
			must(t, err)
			cm, err := child.IndexManifest()
			must(t, err)
			for _, desc := range cm.Manifests {
				img, err := child.Image(desc.Digest)
				must(t, err)
				checkImage(t, img)
			}
		} else {
			img, err := ii.Image(found.Digest)
			must(t, err)
			checkImage(t, img)
		}
	}
}

// TestReadGoContainerRegistryLayout: a layout written by go-containerregistry
// (as crane does), tarred with "./" names, imports.
func TestReadGoContainerRegistryLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	must(t, err)
	img := ociImage(t, 50)
	idx := multiArch(t, 60)
	must(t, p.AppendImage(img, layout.WithAnnotations(map[string]string{AnnotationRefName: "example.com/app:1"})))
	must(t, p.AppendIndex(idx, layout.WithAnnotations(map[string]string{AnnotationRefName: "example.com/multi:2"})))

	dst := newStore()
	imgs, added, rs, err := Read(t.Context(), bytes.NewReader(tarDir(t, dir)), dst, nil)
	must(t, err)
	if len(imgs) != 2 || imgs[0].Ref != "example.com/app:1" || imgs[1].Ref != "example.com/multi:2" {
		t.Fatalf("images %+v", imgs)
	}
	imgDigest, _ := img.Digest()
	idxDigest, _ := idx.Digest()
	if imgs[0].Digest.String() != imgDigest.String() || imgs[1].Digest.String() != idxDigest.String() {
		t.Fatalf("digests %s %s", imgs[0].Digest, imgs[1].Digest)
	}
	want := graph(t, dst, Image{Digest: imgs[0].Digest}, Image{Digest: imgs[1].Digest})
	if len(added) != len(want) || rs.Blobs != len(want) {
		t.Fatalf("added %d blobs, graph has %d", len(added), len(want))
	}
}

// TestSkopeoReads: skopeo finds our images by their full reference. Only
// OCI-typed ones: containers/image skips index.json entries with Docker
// media types when it looks a reference up (see doc.go).
func TestSkopeoReads(t *testing.T) {
	t.Parallel()
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo not installed")
	}
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "site.tar")
	must(t, os.WriteFile(file, archive, 0o644))
	for _, img := range f.imgs {
		if !strings.Contains(img.MediaType, "vnd.oci.") {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, skopeo, "inspect", "--raw", "oci-archive:"+file+":"+img.Ref)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", img.Ref, err, stderr.String())
		}
		if got := digest.SHA256.FromBytes(out); got != img.Digest {
			t.Errorf("%s: skopeo returned a manifest with digest %s, want %s", img.Ref, got, img.Digest)
		}
	}
	// An archive written by skopeo imports.
	out := filepath.Join(tmp, "copied.tar")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cp := exec.CommandContext(ctx, skopeo, "--insecure-policy", "copy", "-q", "oci-archive:"+file+":"+f.imgs[1].Ref, "oci-archive:"+out+":example.com/copied:1")
	cp.Env = append(os.Environ(), "TMPDIR="+tmp)
	if b, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, b)
	}
	copied, err := os.Open(out)
	must(t, err)
	defer copied.Close()
	imgs, _, _, err := Read(t.Context(), copied, newStore(), nil)
	must(t, err)
	if len(imgs) != 1 || imgs[0].Ref != "example.com/copied:1" {
		t.Fatalf("skopeo-written archive: images %+v", imgs)
	}

	// And the non-raw form, which parses the config.
	cmd := exec.CommandContext(ctx, skopeo, "inspect", "oci-archive:"+file+":"+f.imgs[1].Ref)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	info, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(info), f.imgs[1].Digest.String()) {
		t.Fatalf("skopeo inspect: %v\n%s", err, info)
	}
}

// checkImage reads an image's config and layers back through
// go-containerregistry and checks their digests (validate.Image would pull
// in go-cmp, which go.mod does not list).
func checkImage(t testing.TB, img v1.Image) {
	t.Helper()
	if _, err := img.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	must(t, err)
	for _, l := range layers {
		want, err := l.Digest()
		must(t, err)
		rc, err := l.Compressed()
		must(t, err)
		got, _, err := v1.SHA256(rc)
		must(t, err)
		must(t, rc.Close())
		if got != want {
			t.Fatalf("layer %s reads back as %s", want, got)
		}
	}
}
