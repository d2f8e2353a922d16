//go:build linux

package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// stormClients is issue 14's storm: clients asking at once for one
// expired tag.
const stormClients = 1000

// stormTTL is the tag TTL of the storm's mirror: each storm waits it out,
// so the tag is expired when the storm begins.
const stormTTL = time.Second

// BenchmarkTagStorm: per iteration, a thousand clients, each on a
// keep-alive connection of its own, ask at once for one expired tag
// through an upstream with 20 ms of latency. regmirror runs as its own
// process (the binary REGMIRROR_BENCH_BINARIES names "after", default this
// tree) and the clients in this one. Reports the upstream HEADs per storm
// (goal: 1), the clients' answer times (goal: p99 under 50 ms) and the CPU
// the server and the clients used per storm. Two load generators, each a
// sub-benchmark: "epoll", a thousand connections driven from one goroutine
// with plain syscalls (what a thousand machines cost this one: nothing,
// so the less the better), and "goroutines", a goroutine per connection
// through Go's net package, which takes 7–10 ms more CPU per storm from
// the shared two cores and adds its own scheduling to every answer timed.
//
//	go test -run '^$' -bench TagStorm -benchtime 10x ./bench/
func BenchmarkTagStorm(b *testing.B) {
	up := testupstream.Start(b)
	up.PushRandomImage(b, "library/app", "latest", 1, 512)
	dir := b.TempDir()
	conf := filepath.Join(dir, "regmirror.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[server]\nmax_connections_per_ip = %d\n", 4*stormClients)), 0o600); err != nil {
		b.Fatal(err)
	}
	bin := binaries(b)[len(binaries(b))-1][1]
	cmd := exec.Command(bin, "serve", "--config", conf, "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--upstream-url", up.URL(), "--tag-ttl", stormTTL.String())
	profile := ""
	if pd := os.Getenv("REGMIRROR_BENCH_CPUPROFILE"); pd != "" {
		profile = filepath.Join(pd, "storm.prof")
		cmd.Env = append(os.Environ(), "REGMIRROR_CPUPROFILE="+profile)
	}
	addr := startProcess(b, cmd, filepath.Join(dir, "regmirror.log"))
	b.Cleanup(func() { (&target{cmd: cmd}).stop() })
	req := []byte("GET /v2/library/app/manifests/latest HTTP/1.1\r\nHost: " + addr +
		"\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n")

	b.Run("clients=epoll", func(b *testing.B) {
		rc, err := dialRawClients(addr, stormClients)
		if err != nil {
			b.Fatal(err)
		}
		defer rc.close()
		for i := range stormClients { // the first is a miss, the others hits
			if _, err := rc.ask(req, []int{i}); err != nil {
				b.Fatal(err)
			}
		}
		runStorms(b, up, cmd, addr, profile, func() ([]time.Duration, error) { return rc.ask(req, nil) })
	})
	b.Run("clients=goroutines", func(b *testing.B) {
		up.SetLatency(0)
		conns := make([]*stormConn, stormClients)
		for i := range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatalf("connection %d: %v", i, err)
			}
			defer c.Close()
			conns[i] = &stormConn{c: c, r: bufio.NewReader(c)}
			if _, err := conns[i].ask(req); err != nil {
				b.Fatalf("connection %d: %v", i, err)
			}
		}
		runStorms(b, up, cmd, addr, "", func() ([]time.Duration, error) { return storm(conns, req) })
	})
}

// runStorms runs b.N storms against the server cmd (each once its tag
// expired) through an upstream with 20 ms of latency, and reports.
func runStorms(b *testing.B, up *testupstream.Server, cmd *exec.Cmd, addr, profile string, storm func() ([]time.Duration, error)) {
	up.SetLatency(20 * time.Millisecond)
	if profile != "" {
		cmd.Process.Signal(syscall.SIGUSR1)
		defer func() {
			cmd.Process.Signal(syscall.SIGUSR2)
			waitFor(b, func() bool { _, err := os.Stat(profile + ".done"); return err == nil })
		}()
	}
	// One storm first, not counted: the first after start grows the
	// server's worker pool to a goroutine per client and their stacks.
	time.Sleep(stormTTL + 200*time.Millisecond)
	if _, err := storm(); err != nil {
		b.Fatal(err)
	}
	var all []time.Duration
	var serverCPU, clientCPU time.Duration
	storms, heads := 0, 0
	gcs := testpull.Metric(b, "http://"+addr, "go_gc_duration_seconds_count")
	last := time.Now()
	for b.Loop() {
		b.StopTimer()
		time.Sleep(time.Until(last.Add(stormTTL + 200*time.Millisecond))) // the tag expires
		before := up.ManifestRequests(http.MethodHead)
		cpuBefore, ownBefore := processCPU(cmd.Process.Pid), processCPU(os.Getpid())
		b.StartTimer()
		lat, err := storm()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		clientCPU += processCPU(os.Getpid()) - ownBefore
		// The server's work for the storm ends after its last answer (the
		// tag's record is written then): count it once the server is idle.
		settle(b, []*target{{cmd: cmd}})
		serverCPU += processCPU(cmd.Process.Pid) - cpuBefore
		last = time.Now()
		heads += up.ManifestRequests(http.MethodHead) - before
		all = append(all, lat...)
		storms++
		b.StartTimer()
	}
	gcs = testpull.Metric(b, "http://"+addr, "go_gc_duration_seconds_count") - gcs
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(heads)/float64(storms), "upstream-HEADs/storm")
	b.ReportMetric(float64(serverCPU.Microseconds())/1000/float64(storms), "server-cpu-ms/storm")
	b.ReportMetric(float64(clientCPU.Microseconds())/1000/float64(storms), "clients-cpu-ms/storm")
	b.ReportMetric(gcs/float64(storms), "server-GCs/storm")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.9), "p90-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

type stormConn struct {
	c net.Conn
	r *bufio.Reader
}

// ask sends req and reads the answer; it returns the time to the whole
// answer.
func (c *stormConn) ask(req []byte) (time.Duration, error) {
	start := time.Now()
	if _, err := c.c.Write(req); err != nil {
		return 0, err
	}
	if err := readResponse(c.r, false); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// storm has every connection ask at once and returns their times.
func storm(conns []*stormConn, req []byte) ([]time.Duration, error) {
	lat := make([]time.Duration, len(conns))
	errs := make(chan error, len(conns))
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i, c := range conns {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			d, err := c.ask(req)
			if err != nil {
				errs <- err
			}
			lat[i] = d
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	close(errs)
	return lat, <-errs
}
