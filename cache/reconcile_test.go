package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

func TestReconcile(t *testing.T) {
	keepData, keep := blob(1000, 20)
	goneData, gone := blob(1100, 21)
	shortData, short := blob(1200, 22)
	orphanData, orphan := blob(1300, 23)
	_, bad := blob(1400, 24)

	type check func(t *testing.T, s *Store)
	exists := func(path string) bool { _, err := os.Lstat(path); return err == nil }
	for _, tc := range []struct {
		name string
		put  []struct { // stored besides keep before the store is closed
			data []byte
			d    digest.Digest
		}
		mangle func(t *testing.T, dir string, s *Store) // s is closed
		check  check
		// counts expected in the summary line
		summary string
	}{
		{
			name: "clean",
			mangle: func(*testing.T, string, *Store) {
			},
			check: func(t *testing.T, s *Store) {
				if b, n := s.Usage(); b != 1000 || n != 1 {
					t.Fatalf("Usage = %d, %d", b, n)
				}
			},
			summary: "blobs=1 bytes=1000 dropped_records=0 reindexed=0 removed_files=0 removed_temp=0",
		},
		{
			name: "temp files left",
			mangle: func(t *testing.T, dir string, _ *Store) {
				os.WriteFile(filepath.Join(dir, "tmp", "sha256-abc-123"), []byte("partial"), 0o644)
				os.MkdirAll(filepath.Join(dir, "tmp", "subdir", "x"), 0o755)
			},
			check: func(t *testing.T, s *Store) {
				if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
					t.Fatalf("tmp/ holds %v", got)
				}
				if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
					t.Fatalf("tmp/ holds %d entries", len(ents))
				}
			},
			summary: "removed_temp=2",
		},
		{
			name: "record without file",
			put: []struct {
				data []byte
				d    digest.Digest
			}{{goneData, gone}},
			mangle: func(t *testing.T, dir string, s *Store) {
				os.Remove(blobFile(s, gone))
			},
			check: func(t *testing.T, s *Store) {
				if _, err := s.Stat(gone); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Stat(gone) = %v", err)
				}
			},
			summary: "blobs=1 bytes=1000 dropped_records=1 reindexed=0 removed_files=0",
		},
		{
			name: "record with truncated file",
			put: []struct {
				data []byte
				d    digest.Digest
			}{{shortData, short}},
			mangle: func(t *testing.T, dir string, s *Store) {
				os.Truncate(blobFile(s, short), 10)
			},
			check: func(t *testing.T, s *Store) {
				if _, err := s.Stat(short); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Stat(short) = %v", err)
				}
				if exists(blobFile(s, short)) {
					t.Fatal("truncated file kept")
				}
			},
			summary: "blobs=1 bytes=1000 dropped_records=1 reindexed=0 removed_files=1",
		},
		{
			name: "orphan file with good content",
			mangle: func(t *testing.T, dir string, s *Store) {
				p := blobFile(s, orphan)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, orphanData, 0o644)
			},
			check: func(t *testing.T, s *Store) {
				info, err := s.Stat(orphan)
				if err != nil || info.Size != 1300 || info.MediaType != "application/octet-stream" {
					t.Fatalf("Stat(orphan) = %+v, %v", info, err)
				}
				if b, n := s.Usage(); b != 2300 || n != 2 {
					t.Fatalf("Usage = %d, %d", b, n)
				}
			},
			summary: "blobs=2 bytes=2300 dropped_records=0 reindexed=1 removed_files=0",
		},
		{
			name: "orphan file with bad content",
			mangle: func(t *testing.T, dir string, s *Store) {
				p := blobFile(s, bad)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, orphanData, 0o644)
			},
			check: func(t *testing.T, s *Store) {
				if _, err := s.Stat(bad); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Stat(bad) = %v", err)
				}
				if exists(blobFile(s, bad)) {
					t.Fatal("file with wrong content kept")
				}
			},
			summary: "blobs=1 bytes=1000 dropped_records=0 reindexed=0 removed_files=1",
		},
		{
			name: "bad names",
			mangle: func(t *testing.T, dir string, s *Store) {
				root := filepath.Join(dir, "blobs", "sha256")
				k := keep.Encoded()
				os.WriteFile(filepath.Join(root, k[:2], "notadigest"), nil, 0o644)
				os.WriteFile(filepath.Join(root, k[:2], strings.ToUpper(k)), keepData, 0o644)
				os.MkdirAll(filepath.Join(root, "zz"), 0o755)
				os.WriteFile(filepath.Join(root, "zz", k), keepData, 0o644)
				os.WriteFile(filepath.Join(root, "stray"), nil, 0o644)
				// Right name, wrong fan-out directory.
				wrong := "00"
				if k[:2] == wrong {
					wrong = "01"
				}
				os.MkdirAll(filepath.Join(root, wrong), 0o755)
				os.WriteFile(filepath.Join(root, wrong, k), keepData, 0o644)
				os.Symlink(blobFile(s, keep), filepath.Join(root, orphan.Encoded()[:2], orphan.Encoded()))
			},
			check: func(t *testing.T, s *Store) {
				got := files(t, filepath.Join(s.Dir(), "blobs"))
				if len(got) != 1 || got[0] != filepath.Join("sha256", keep.Encoded()[:2], keep.Encoded()) {
					t.Fatalf("blobs/ holds %v", got)
				}
				if _, err := s.Stat(orphan); !errors.Is(err, ErrNotFound) {
					t.Fatalf("symlink indexed: %v", err)
				}
			},
			summary: "blobs=1 bytes=1000 dropped_records=0 reindexed=0 removed_files=6",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			mustPut(t, s, keepData, keep, "x")
			for _, p := range tc.put {
				mustPut(t, s, p.data, p.d, "x")
			}
			os.MkdirAll(filepath.Join(dir, "blobs", "sha256", orphan.Encoded()[:2]), 0o755)
			s.Close()
			simulateCrash(t, dir)
			tc.mangle(t, dir, s)

			logs := &syncBuffer{}
			s2 := openStore(t, dir, func(o *Options) { o.Logger = testLogger(logs) })
			tc.check(t, s2)
			var summary string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "cache reconciled") {
					summary = l
				}
			}
			if !strings.Contains(summary, tc.summary) {
				t.Fatalf("summary %q does not contain %q\nlogs:\n%s", summary, tc.summary, logs)
			}
			// The kept blob is intact and servable.
			if got, _, err := s2.ReadAll(keep, 1<<20); err != nil || string(got) != string(keepData) {
				t.Fatalf("kept blob: %v", err)
			}
			// The reconciled state is stable: a second reopen changes nothing.
			b, n := s2.Usage()
			s2.Close()
			s3 := openStore(t, dir)
			if b3, n3 := s3.Usage(); b3 != b || n3 != n {
				t.Fatalf("second reopen Usage = %d, %d; first %d, %d", b3, n3, b, n)
			}
		})
	}
}

// TestCrashBetweenRenameAndIndex simulates the window Commit's ordering
// leaves: the file is in blobs/ but the record was never written.
func TestCrashBetweenRenameAndIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data, d := blob(5000, 30)
	mustPut(t, s, data, d, "application/vnd.oci.image.manifest.v1+json")
	dropRecord(t, s, d)
	s.Close()
	simulateCrash(t, dir)
	s2 := openStore(t, dir)
	got, info, err := s2.ReadAll(d, 1<<20)
	if err != nil || string(got) != string(data) || info.MediaType != defaultMediaType {
		t.Fatalf("after reconcile: %+v, %v", info, err)
	}
}

// TestReindexedManifestKeepsItsType: a manifest found without a record
// (crash between rename and index write) is re-indexed with its own media
// type, read from its content, not application/octet-stream, which clients
// refuse for a manifest. Other content keeps the generic type. A record
// that has the generic type takes the real one when the manifest is
// stored again.
func TestReindexedManifestKeepsItsType(t *testing.T) {
	desc := `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + strings.Repeat("a", 64) + `","size":1}`
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":2}`
	random, _ := blob(3000, 31)
	cases := []struct {
		name, body, want string
	}{
		{"oci manifest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + cfg + `,"layers":[` + desc + `]}`, mediaTypeOCIManifest},
		{"oci manifest without mediaType", `{"schemaVersion":2,"config":` + cfg + `,"layers":[]}`, mediaTypeOCIManifest},
		{"oci index without mediaType", ` {"schemaVersion":2,"manifests":[` + desc + `]}` + "\n", mediaTypeOCIIndex},
		{"oci index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, mediaTypeOCIIndex},
		{"docker manifest", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":` + cfg + `,"layers":[` + desc + `]}`, mediaTypeDockerManifest},
		{"docker list", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[` + desc + `]}`, mediaTypeDockerList},
		{"image config", `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`, defaultMediaType},
		{"schema 1", `{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + cfg + `,"layers":[]}`, defaultMediaType},
		{"type contradicts shape", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","manifests":[]}`, defaultMediaType},
		{"both shapes", `{"schemaVersion":2,"config":` + cfg + `,"layers":[],"manifests":[]}`, defaultMediaType},
		{"artifact type", `{"schemaVersion":2,"mediaType":"application/vnd.example+json","config":` + cfg + `,"layers":[]}`, defaultMediaType},
		{"random bytes", string(random), defaultMediaType},
	}
	dir := t.TempDir()
	s := openStore(t, dir)
	ds := make([]digest.Digest, len(cases))
	for i, c := range cases {
		ds[i] = digest.FromString(c.body)
		mustPut(t, s, []byte(c.body), ds[i], "application/vnd.oci.image.manifest.v1+json")
		dropRecord(t, s, ds[i])
	}
	s.Close()
	simulateCrash(t, dir)

	s2 := openStore(t, dir)
	for i, c := range cases {
		if info, err := s2.Stat(ds[i]); err != nil || info.MediaType != c.want {
			t.Errorf("%s: re-indexed as %q (%v), want %q", c.name, info.MediaType, err, c.want)
		}
	}

	// Stored again with its type (the proxy fetched it): the generic type
	// is corrected; a real type is never overwritten.
	cfgBody := cases[6]
	info, err := s2.Put(ds[6], "application/vnd.oci.image.config.v1+json", []byte(cfgBody.body))
	if err != nil || info.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Fatalf("Put over a generic record: %+v, %v", info, err)
	}
	if info, err := s2.Stat(ds[6]); err != nil || info.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Fatalf("record after Put: %+v, %v", info, err)
	}
	info, err = s2.Put(ds[0], "application/json", []byte(cases[0].body))
	if err != nil || info.MediaType != mediaTypeOCIManifest {
		t.Fatalf("Put over a typed record: %+v, %v", info, err)
	}
	if info, err := s2.Stat(ds[0]); err != nil || info.MediaType != mediaTypeOCIManifest {
		t.Fatalf("typed record after Put: %+v, %v", info, err)
	}
}

// dropRecord deletes only d's index record, as if its write had been lost.
func dropRecord(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	s.closeMu.RLock()
	err := s.update(func(txn *badgerTxn) error { return txn.Delete(blobKey(d)) })
	s.closeMu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
}
