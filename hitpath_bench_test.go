package main

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// BenchmarkHitPath measures the cache side of serving a hit (open the blob
// by digest, record the access, close) with eviction wired in and without:
// the difference is what eviction adds to every hit.
func BenchmarkHitPath(b *testing.B) {
	for _, eviction := range []bool{false, true} {
		b.Run(fmt.Sprintf("eviction=%v", eviction), func(b *testing.B) {
			cfg := defaultConfig()
			cfg.DataDir = b.TempDir()
			cfg.Cache.MinFree = "0"
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			var store *cache.Store
			if eviction {
				st, err := openStack(cfg, log)
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				store = st.Store
			} else {
				s, err := cache.Open(cache.Options{Dir: cfg.DataDir, Logger: log})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				store = s
			}
			var ds []digest.Digest
			for i := 0; i < 1000; i++ {
				data := []byte(fmt.Sprintf("blob %d", i))
				d := digest.FromBytes(data)
				if _, err := store.Put(d, "application/octet-stream", data); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, d)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					f, _, err := store.Open(ds[i%len(ds)])
					if err != nil {
						b.Fatal(err)
					}
					f.Close()
					i++
				}
			})
		})
	}
}
