package proxy

import (
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// TestDisconnectsReleaseDescriptors: clients that leave mid-body, from the
// cache and from a fill, leave no file descriptor behind.
func TestDisconnectsReleaseDescriptors(t *testing.T) {
	const size = 4 << 20
	up := testupstream.Start(t)
	_, warm := up.PushLargeBlobImage(t, "library/warm", "latest", size)
	_, cold := up.PushLargeBlobImage(t, "library/cold", "latest", size)
	gate := up.Gate(cold).SetHeadBytes(1 << 20)
	m := startMirror(t, up)
	send(t, http.MethodGet, m.url+"/v2/library/warm/blobs/"+warm.String())

	leave := func(url string) {
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // mid-body: the connection is closed under the server
	}
	before := openFDs(t)
	for i := 0; i < 20; i++ {
		leave(m.url + "/v2/library/warm/blobs/" + warm.String())
		leave(m.url + "/v2/library/cold/blobs/" + cold.String())
	}
	gate.Open()
	eventually(t, "descriptors to be released", func() bool { return openFDs(t) <= before+2 })
}
