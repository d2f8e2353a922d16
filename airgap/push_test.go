package airgap

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
)

// recordingTarget remembers what was written, in order.
type recordingTarget struct {
	mu     sync.Mutex
	writes []string // "blob <digest>" or "manifest <repo>:<ref>"
	bodies map[digest.Digest][]byte
}

func (r *recordingTarget) Registry() string { return "site.example" }

func (r *recordingTarget) PutBlob(_ context.Context, repo string, d digest.Digest, size int64, _ string, open func() (io.ReadCloser, error)) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if digest.FromBytes(b) != d || int64(len(b)) != size {
		return errors.New("blob content does not match")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, "blob "+d.String())
	return nil
}

func (r *recordingTarget) PutManifest(_ context.Context, repo, ref, _ string, body []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, "manifest "+repo+":"+ref)
	r.bodies[digest.FromBytes(body)] = body
	return nil
}

// TestPushOrderAndPartialIndex: push-to writes every blob, then the child
// manifests by digest, then the index under its tag, each body as cached;
// an index missing a cached child is refused before anything is written.
func TestPushOrderAndPartialIndex(t *testing.T) {
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	src := memSource{}
	raw, _ := idx.RawManifest()
	root := digest.FromBytes(raw)
	src[root] = raw
	im, _ := idx.IndexManifest()
	var children []digest.Digest
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, digest.Digest(m.Digest.String()))
		mraw, _ := img.RawManifest()
		src[digest.FromBytes(mraw)] = mraw
		cfg, _ := img.RawConfigFile()
		src[digest.FromBytes(cfg)] = cfg
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, _ := l.Compressed()
			b, _ := io.ReadAll(rc)
			src[digest.FromBytes(b)] = b
		}
	}
	items, skipped, err := Plan(t.Context(), catalog{{Ref: "ghcr.io/org/app:v1", Digest: root, MediaType: string(types.OCIImageIndex)}}, src, nil, true)
	if err != nil || len(skipped) > 0 || len(items) != 1 {
		t.Fatalf("plan: %v %v %v", items, skipped, err)
	}
	tg := &recordingTarget{bodies: map[digest.Digest][]byte{}}
	var out strings.Builder
	res := Push(t.Context(), src, items, tg, PushOptions{DefaultRegistry: "docker.io", Out: &out})
	if res.OK != 1 || res.Failed != 0 {
		t.Fatalf("push: %+v\n%s", res, out.String())
	}
	n := len(tg.writes)
	if tg.writes[n-1] != "manifest ghcr.io/org/app:v1" {
		t.Errorf("last write %q, want the index under its tag", tg.writes[n-1])
	}
	for i, w := range tg.writes[:n-1] {
		if strings.HasPrefix(w, "manifest") && i < n-3 {
			t.Errorf("a manifest (%s) written before the blobs", w)
		}
	}
	for _, c := range children {
		if string(tg.bodies[c]) != string(src[c]) {
			t.Errorf("child %s not written as cached", c)
		}
	}
	if string(tg.bodies[root]) != string(raw) {
		t.Error("index not written as cached")
	}

	// One child never cached: refused, nothing written.
	delete(src, children[1])
	items, _, err = Plan(t.Context(), catalog{{Ref: "ghcr.io/org/app:v1", Digest: root, MediaType: string(types.OCIImageIndex)}}, src, nil, true)
	if err != nil || len(items) != 1 || items[0].Missing != 1 {
		t.Fatalf("plan of a partial index: %+v %v", items, err)
	}
	tg = &recordingTarget{bodies: map[digest.Digest][]byte{}}
	out.Reset()
	res = Push(t.Context(), src, items, tg, PushOptions{DefaultRegistry: "docker.io", Out: &out})
	if res.Failed != 1 || len(tg.writes) != 0 || !strings.Contains(out.String(), ErrPartialIndex.Error()) {
		t.Fatalf("push of a partial index: %+v, wrote %v\n%s", res, tg.writes, out.String())
	}
}

// catalog is a fixed image list.
type catalog []admin.Image

func (c catalog) Images(context.Context) ([]admin.Image, error) { return c, nil }
