package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// stormClients is the storm: clients asking at once for one
// expired tag.
const stormClients = 1000

// stormMirror serves library/app:latest with a one-hour tag TTL; expire
// makes its tag record an hour and a minute old, so the next request
// revalidates it.
func stormMirror(t testing.TB) (m *mirror, up *testupstream.Server, want digest.Digest, expire func()) {
	up = testupstream.Start(t)
	want = testupstream.Digest(t, up.PushRandomImage(t, "library/app", "latest", 1, 512))
	m = startMirror(t, up, func(c *config) {
		c.TagTTL = duration{time.Hour}
		c.Server.MaxConnectionsPerIP = 4 * stormClients
	})
	pullAll(t, m, "library/app:latest")
	st := m.app.cache.Store
	expire = func() {
		rec, err := st.Tag(dockerHubName, "library/app", "latest")
		if err != nil {
			t.Fatal(err)
		}
		rec.CheckedAt = time.Now().Add(-time.Hour - time.Minute)
		if err := st.SetTag(dockerHubName, "library/app", "latest", rec); err != nil {
			t.Fatal(err)
		}
	}
	return m, up, want, expire
}

// stormClient keeps one connection per client, so that a storm measures the
// mirror, not connection setup.
func stormClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: stormClients, MaxConnsPerHost: stormClients}}
}

// askTag GETs the tag's manifest and returns the digest answered. wrote, if
// not nil, is called once the request is sent (or failed to be).
func askTag(c *http.Client, url string, wrote func()) (digest.Digest, error) {
	req, _ := http.NewRequest(http.MethodGet, url+"/v2/library/app/manifests/latest", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if wrote != nil {
		var once sync.Once
		done := func() { once.Do(wrote) }
		defer done()
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { done() },
		}))
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return digest.FromBytes(body), nil
}

// storm sends stormClients requests at once and returns their latencies.
// With gate set, the upstream HEAD is held until every request is sent.
func storm(t testing.TB, c *http.Client, url string, want digest.Digest, gate *testupstream.Gate) []time.Duration {
	var sent, done sync.WaitGroup
	lat := make([]time.Duration, stormClients)
	errs := make(chan error, stormClients)
	start := make(chan struct{})
	for i := range stormClients {
		sent.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			<-start
			t0 := time.Now()
			got, err := askTag(c, url, sent.Done)
			lat[i] = time.Since(t0)
			if err == nil && got != want {
				err = fmt.Errorf("answered %s, want %s", got, want)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	if gate != nil {
		<-gate.Arrived()
		sent.Wait()
		gate.Open()
	}
	done.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return lat
}

// TestTagStormOneHead: a thousand clients asking at once for one expired
// tag cause one upstream HEAD, and all get the manifest. The HEAD is held
// (a gate, not a timer) until every request has been sent, so the others
// arrive while it is in flight; a request that arrives after it finished
// finds the record fresh, inside its own flight if need be.
func TestTagStormOneHead(t *testing.T) {
	m, up, want, expire := stormMirror(t)
	c := stormClient()
	expire()
	heads, gets := up.ManifestRequests(http.MethodHead), up.ManifestRequests(http.MethodGet)
	gate := up.GateManifestHeads()
	storm(t, c, m.url, want, gate)
	if n := up.ManifestRequests(http.MethodHead) - heads; n != 1 {
		t.Errorf("upstream manifest HEADs = %d, want 1", n)
	}
	if n := up.ManifestRequests(http.MethodGet) - gets; n != 0 {
		t.Errorf("upstream manifest GETs = %d, want 0 (the digest did not move)", n)
	}
}

// BenchmarkTagStorm: per iteration, a thousand clients (one keep-alive
// connection each) ask at once for one expired tag through an upstream
// with 20 ms of latency. Reports the upstream HEADs per storm (want 1) and
// the p50 and p99 of the clients' answer times (goal: p99 under 50 ms).
func BenchmarkTagStorm(b *testing.B) {
	m, up, want, expire := stormMirror(b)
	c := stormClient()
	storm(b, c, m.url, want, nil) // open the connections; the tag is fresh
	up.SetLatency(20 * time.Millisecond)
	heads := up.ManifestRequests(http.MethodHead)
	var all []time.Duration
	storms := 0
	for b.Loop() {
		b.StopTimer()
		expire()
		b.StartTimer()
		all = append(all, storm(b, c, m.url, want, nil)...)
		storms++
	}
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(up.ManifestRequests(http.MethodHead)-heads)/float64(storms), "upstream-HEADs/storm")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
