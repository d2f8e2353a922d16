package cache

import (
	"context"
	"testing"
)

// BenchmarkVerifyAll re-hashes 64 MiB of cached blobs, unlimited and at
// the limiter's 32 MiB/s, to show the rate is kept (MB/s column):
//
//	go test -run '^$' -bench BenchmarkVerifyAll -benchtime 3x ./cache/
func BenchmarkVerifyAll(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate int64
	}{{"unlimited", 0}, {"rate=32MiB/s", 32 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), Logger: testLogger(discard{})})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var total int64
			for i := range 4 {
				data, d := blob(16<<20, uint64(200+i))
				if _, err := s.Put(d, "x", data); err != nil {
					b.Fatal(err)
				}
				total += int64(len(data))
			}
			b.SetBytes(total)
			b.ResetTimer()
			for b.Loop() {
				rep, err := s.VerifyAll(context.Background(), VerifyOptions{Rate: bc.rate})
				if err != nil || rep.Bytes != total || len(rep.Corrupt) != 0 {
					b.Fatalf("%+v, %v", rep, err)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
