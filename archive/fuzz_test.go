package archive

import (
	"bytes"
	"testing"
)

// FuzzRead feeds arbitrary bytes to Read: it must not panic, and whatever
// it returns, added must list exactly what reached the sink.
func FuzzRead(f *testing.F) {
	s := newStore()
	img := s.addImage(f, "x/y:1", schema2Image(f, 3))
	var buf bytes.Buffer
	if _, err := Write(f.Context(), &buf, s, []Image{img}, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()/2])
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := newStore()
		_, added, _, _ := Read(t.Context(), bytes.NewReader(data), dst, nil)
		if len(added) != len(dst.blobs) {
			t.Fatalf("added %d, sink holds %d", len(added), len(dst.blobs))
		}
	})
}
