package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestRequestLogFlushedAtShutdown: serve writes its log in batches (off
// the requests' path); the request lines of the last requests before a
// SIGTERM are still written, as the process ends.
func TestRequestLogFlushedAtShutdown(t *testing.T) {
	up := testupstream.Start(t)
	proc := testprocess.Serve(t, false, "--data-dir", t.TempDir(), "--upstream-url", up.URL())
	// A burst: the first line goes out at once, the others wait for the
	// next batch, which the SIGTERM right after overtakes.
	path := func(i int) string { return fmt.Sprintf("/v2/library/last-%d/manifests/latest", i) }
	const burst = 20
	for i := range burst {
		resp, err := http.Get(proc.URL + path(i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := proc.Stop(); err != nil {
		t.Fatal(err)
	}
	logs := proc.Logs()
	for i := range burst {
		if !strings.Contains(logs, "path="+path(i)+" ") {
			t.Errorf("the request line of %s was lost at shutdown", path(i))
		}
	}
	if t.Failed() {
		t.Log(logs)
	}
}
