package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/internal/sigprof"
	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// Small requests (issue 14, goal 3): warm manifest GETs by digest and blob
// HEADs over smallConns keep-alive connections, against regmirror built at
// two revisions and against a fasthttp server that does no work at all (the
// ceiling; and the same server with regmirror's timeouts, "timeouts"),
// each in its own process, measured in the same run by a load
// generator in this process. bench/smallreq.sh builds the binaries and
// prints the table.
//
//	REGMIRROR_BENCH_BINARIES=before=/tmp/a,after=/tmp/b   the regmirror binaries (default: after = this tree)
//	REGMIRROR_BENCH_CPUPROFILE=DIR   with binaries built -tags cpuprofile: a CPU profile of each measured load
//	REGMIRROR_BENCH_CLIENTS=goroutines,epoll   the load generators (see smallClients)
const smallConns = 32

// envNoWork makes the test binary a no-work fasthttp server (see TestMain).
const envNoWork = "REGMIRROR_BENCH_NOWORK"

func TestMain(m *testing.M) {
	if v := os.Getenv(envNoWork); v != "" { // "nowork" or "timeouts"
		serveNoWork(v == "timeouts")
		return
	}
	code := m.Run()
	printSmallTable(os.Stdout)
	os.Exit(code)
}

// noWorkBody is about the size of the manifest the benchmark asks for.
var noWorkBody = bytes.Repeat([]byte("x"), 428)

// serveNoWork answers every request 200 with a fixed body: what fasthttp
// costs with nothing behind it (the ceiling of issue 14's goal 3). With
// timeouts it also keeps regmirror's default read, write and idle
// timeouts, which cost fasthttp a deadline (a clock read and a runtime
// timer update) three times per request: the "timeouts" column shows what
// that part of the gap between regmirror and the ceiling is. It prints
// its address on stdout.
func serveNoWork(timeouts bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listen=%s\n", ln.Addr())
	sigprof.Start(os.Getenv("REGMIRROR_CPUPROFILE"))
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/vnd.docker.distribution.manifest.v2+json")
		ctx.SetBody(noWorkBody)
	}}
	if timeouts { // [server] read_timeout, write_timeout, idle_timeout's defaults
		srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = time.Minute, time.Hour, 2*time.Minute
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// startTarget starts the server cmd as target name, profiled (every
// target alike, so that the profiling costs each the same) when
// REGMIRROR_BENCH_CPUPROFILE names a directory.
func startTarget(b *testing.B, dir, name string, cmd *exec.Cmd) *target {
	t := &target{name: name, cmd: cmd}
	if pd := os.Getenv("REGMIRROR_BENCH_CPUPROFILE"); pd != "" {
		t.profile = filepath.Join(pd, name+".prof")
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, "REGMIRROR_CPUPROFILE="+t.profile)
	}
	t.addr = startProcess(b, cmd, filepath.Join(dir, name+".log"))
	return t
}

// target is one server under load.
type target struct {
	name, addr string
	cmd        *exec.Cmd
	profile    string // where its CPU profile goes, or ""
}

func (t *target) stop() {
	if t.cmd != nil && t.cmd.ProcessState == nil {
		t.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { t.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.cmd.Process.Kill()
			<-done
		}
	}
}

var listenRE = regexp.MustCompile(`listen=(\S+)`)

// startProcess runs cmd with its output in logFile and waits for a
// "listen=ADDR" in it.
func startProcess(b *testing.B, cmd *exec.Cmd, logFile string) string {
	f, err := os.Create(logFile)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(logFile)
		for _, line := range strings.Split(string(data), "\n") {
			if m := listenRE.FindStringSubmatch(line); m != nil && (strings.Contains(line, "serving") || strings.HasPrefix(line, "listen=")) {
				return m[1]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	b.Fatalf("%s did not start", cmd.Path)
	return ""
}

// binaries are the regmirror builds to measure, by name.
func binaries(b *testing.B) [][2]string {
	spec := os.Getenv("REGMIRROR_BENCH_BINARIES")
	if spec == "" {
		return [][2]string{{"after", testprocess.Binary(b)}}
	}
	var out [][2]string
	for _, kv := range strings.Split(spec, ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok {
			b.Fatalf("REGMIRROR_BENCH_BINARIES: %q is not name=path", kv)
		}
		out = append(out, [2]string{name, path})
	}
	return out
}

// smallPaths are the two requests of the mix.
type smallPaths struct{ manifest, blob string }

// smallResults are, per load generator, req/s (and CPU per request) by
// round and target, for the tables.
var smallResults struct {
	mu      sync.Mutex
	order   []string
	clients []string
	rounds  map[string][]map[string]float64
}

// The load generators of BenchmarkSmallRequests, picked by
// REGMIRROR_BENCH_CLIENTS (comma-separated; goroutines by default): a
// goroutine per connection over net.Conn, or one epoll loop per CPU over
// plain syscalls (rawClients). Either runs on the server's two cores. The
// tables show what each costs per request: both pay more per request
// against regmirror than against the ceiling (longer answers to parse, and
// more reads that find nothing yet and wait).
func smallClients() []string {
	if v := os.Getenv("REGMIRROR_BENCH_CLIENTS"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"goroutines"}
}

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkSmallRequests measures, per target, warm small requests
// (alternately a manifest GET by digest and a blob HEAD) on 32 keep-alive
// connections for REGMIRROR_BENCH_SECONDS (default 5) each, in
// REGMIRROR_BENCH_ROUNDS rounds (default 3); in every round each target is
// measured once, in a rotating order, so that the machine's load drifts
// over all of them alike. Run it once (-benchtime 1x); TestMain prints the
// table with each build's fraction of the ceiling of its own round, and
// the medians are reported as metrics.
func BenchmarkSmallRequests(b *testing.B) {
	rounds := envInt("REGMIRROR_BENCH_ROUNDS", 3)
	window := time.Duration(envInt("REGMIRROR_BENCH_SECONDS", 5)) * time.Second
	clients := smallClients()
	up := testupstream.Start(b)
	img := up.PushRandomImage(b, "library/small", "latest", 1, 512)
	paths := smallPaths{
		manifest: "/v2/library/small/manifests/" + testupstream.Digest(b, img).String(),
		blob:     "/v2/library/small/blobs/" + testupstream.LayerDigests(b, img)[0].String(),
	}
	dir := b.TempDir()

	var targets []*target
	for _, mode := range []string{"nowork", "timeouts"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envNoWork+"="+mode)
		t := startTarget(b, dir, mode, cmd)
		defer t.stop()
		targets = append(targets, t)
	}
	for _, nb := range binaries(b) {
		name, bin := nb[0], nb[1]
		t := startTarget(b, dir, name, exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, name), "--upstream-url", up.URL()))
		defer t.stop()
		warmSmall(b, t.addr, paths)
		targets = append(targets, t)
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}
	results := map[string][]map[string]float64{}
	for r := range rounds {
		round := map[string]map[string]float64{}
		for _, c := range clients {
			round[c] = map[string]float64{}
		}
		for k := range targets {
			t := targets[(k+r)%len(targets)]
			for j := range clients {
				client := clients[(j+r)%len(clients)]
				settle(b, targets)
				profiled := r == rounds-1 && j == 0 && t.profile != "" // one window of the last round
				maps.Copy(round[client], measureWindow(b, t, client, paths, window, profiled))
			}
		}
		for _, c := range clients {
			results[c] = append(results[c], round[c])
		}
	}
	smallResults.mu.Lock()
	smallResults.order, smallResults.clients, smallResults.rounds = names, clients, results
	smallResults.mu.Unlock()
	for _, c := range clients {
		for _, n := range names {
			var rates, ratios []float64
			for _, r := range results[c] {
				rates = append(rates, r[n])
				ratios = append(ratios, r[n]/r["nowork"])
			}
			b.ReportMetric(median(rates), n+"-req/s-"+c)
			if n != "nowork" {
				b.ReportMetric(median(ratios), n+"/ceiling-"+c)
			}
		}
	}
}

// measureWindow runs client against t for one window, profiled if asked,
// and gives its figures under the target's name: req/s, and per answered
// request the server's CPU (" cpu"), the load generator's (" client cpu")
// and the server's read and write syscalls (" syscalls").
func measureWindow(b *testing.B, t *target, client string, paths smallPaths, window time.Duration, profiled bool) map[string]float64 {
	if profiled {
		t.cmd.Process.Signal(syscall.SIGUSR1)
	}
	pid := t.cmd.Process.Pid
	cpuBefore, selfBefore, callsBefore := processCPU(pid), processCPU(os.Getpid()), processSyscalls(pid)
	rate, n, err := smallLoad(client, t.addr, paths, window)
	if err != nil {
		b.Fatalf("%s, %s client: %v", t.name, client, err)
	}
	out := map[string]float64{t.name: rate}
	if n > 0 {
		perRequest := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
		out[t.name+" cpu"] = perRequest(processCPU(pid) - cpuBefore)
		out[t.name+" client cpu"] = perRequest(processCPU(os.Getpid()) - selfBefore)
		out[t.name+" syscalls"] = math.NaN()
		if calls := processSyscalls(pid); calls >= 0 && callsBefore >= 0 {
			out[t.name+" syscalls"] = float64(calls-callsBefore) / float64(n)
		}
	}
	if profiled {
		t.cmd.Process.Signal(syscall.SIGUSR2)
		waitFor(b, func() bool { _, err := os.Stat(t.profile + ".done"); return err == nil })
		os.Remove(t.profile + ".done")
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// warmSmall fetches the manifest and the blob once, so that the load
// measures hits, and checks that a second ask is answered from the cache.
func warmSmall(b *testing.B, addr string, p smallPaths) {
	for _, path := range []string{p.manifest, p.blob, p.manifest} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("warming %s: status %d", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodHead, "http://"+addr+p.blob, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Regmirror-Cache") != "hit" {
		b.Fatalf("blob HEAD after warming: status %d, cache %q", resp.StatusCode, resp.Header.Get("X-Regmirror-Cache"))
	}
}

// smallLoad sends requests over smallConns connections for window, with
// the load generator client, and returns the rate and the number of
// requests answered.
func smallLoad(client, addr string, p smallPaths, window time.Duration) (float64, int64, error) {
	reqs := [2][]byte{
		[]byte("GET " + p.manifest + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: regmirror-bench\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"),
		[]byte("HEAD " + p.blob + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: regmirror-bench\r\n\r\n"),
	}
	switch client {
	case "goroutines":
		return goroutineLoad(addr, reqs, window)
	case "epoll":
		return epollLoad(addr, reqs, window)
	}
	return 0, 0, fmt.Errorf("no load generator %q (goroutines or epoll)", client)
}

// epollLoad is one epoll loop per CPU (rawClients.closedLoop), each over
// its share of the connections: one loop alone could not keep up with a
// fast server, and the figure would be the client's.
func epollLoad(addr string, reqs [2][]byte, window time.Duration) (float64, int64, error) {
	loops := min(runtime.GOMAXPROCS(0), smallConns)
	var sets []*rawClients
	defer func() {
		for _, rc := range sets {
			rc.close()
		}
	}()
	for i := range loops {
		rc, err := dialRawClients(addr, (smallConns+i)/loops) // the loops' shares add up to smallConns
		if err != nil {
			return 0, 0, err
		}
		sets = append(sets, rc)
	}
	var total atomic.Int64
	errs := make(chan error, loops)
	start := time.Now()
	for _, rc := range sets {
		go func() {
			n, err := rc.closedLoop(reqs, window)
			total.Add(n)
			errs <- err
		}()
	}
	var first error
	for range loops { // every loop ends before its descriptors are closed
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, 0, first
	}
	return float64(total.Load()) / time.Since(start).Seconds(), total.Load(), nil
}

// goroutineLoad is a goroutine per connection, each a few lines over a
// raw connection.
func goroutineLoad(addr string, reqs [2][]byte, window time.Duration) (float64, int64, error) {
	var stop atomic.Bool
	var total atomic.Int64
	errs := make(chan error, smallConns)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < smallConns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			r := bufio.NewReaderSize(conn, 16<<10)
			n := 0
			for i := c; !stop.Load(); i++ {
				if _, err := conn.Write(reqs[i%2]); err != nil {
					errs <- err
					return
				}
				if err := readResponse(r, i%2 == 1); err != nil {
					errs <- err
					return
				}
				n++
			}
			total.Add(int64(n))
		}()
	}
	time.Sleep(window)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return float64(total.Load()) / elapsed.Seconds(), total.Load(), nil
}

// readResponse reads one response, checking for a 200, and discards it.
func readResponse(r *bufio.Reader, head bool) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("response %q", bytes.TrimSpace(line))
	}
	length := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(k), "Content-Length") {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return err
			}
		}
		if ok && strings.EqualFold(string(k), "Connection") && strings.EqualFold(string(bytes.TrimSpace(v)), "close") {
			return errors.New("server closed the connection")
		}
	}
	if head {
		return nil
	}
	if length < 0 {
		return errors.New("no Content-Length")
	}
	_, err = r.Discard(length)
	return err
}

// settle waits until no target uses CPU (less than 1 % of a core over a
// quarter of a second): a server still working off the previous window
// (flushing access times, collecting garbage, writing its log) would
// otherwise take the CPU from the next target's window.
func settle(b *testing.B, targets []*target) {
	const interval = 250 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var before time.Duration
		for _, t := range targets {
			before += processCPU(t.cmd.Process.Pid)
		}
		time.Sleep(interval)
		var after time.Duration
		for _, t := range targets {
			after += processCPU(t.cmd.Process.Pid)
		}
		if after-before <= interval/100 {
			return
		}
	}
	b.Logf("the servers did not settle within a minute")
}

// processCPU is the CPU time (user and system) process pid has used so
// far, from /proc/<pid>/stat (in clock ticks of 10 ms, the kernel's
// USER_HZ on every Linux the benchmark runs on), or 0 if unreadable.
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 { // utime and stime are fields 14 and 15, i.e. 12 and 13 after ")"
		return 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// processSyscalls is how many read and write system calls (syscr + syscw
// in /proc/<pid>/io: reads, writes, and their vector kinds; a sendfile
// counts in both) process pid has made so far, or -1 if unreadable.
func processSyscalls(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	var n int64
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "syscr" || k == "syscw" {
			c, _ := strconv.ParseInt(v, 10, 64)
			n += c
		}
	}
	return n
}

// tableHead writes a Markdown table's head: a round column, then names.
func tableHead(w io.Writer, names []string) {
	fmt.Fprint(w, "| round |")
	for _, n := range names {
		fmt.Fprintf(w, " %s |", n)
	}
	fmt.Fprint(w, "\n|---|")
	for range names {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
}

// printSmallTable prints the rounds of BenchmarkSmallRequests, if any ran,
// as Markdown tables per load generator: req/s of each target and its
// fraction of the no-work ceiling of the same round, then the medians; the
// server's CPU per request; the load generator's.
func printSmallTable(w io.Writer) {
	smallResults.mu.Lock()
	defer smallResults.mu.Unlock()
	for _, c := range smallResults.clients {
		names, rounds := smallResults.order, smallResults.rounds[c]
		if len(rounds) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nsmall requests, %d keep-alive connections (manifest GET by digest / blob HEAD), %s client: req/s and fraction of the no-work ceiling of the same round\n\n", smallConns, c)
		printRounds(w, names, rounds, "", "%.0f", true)
		fmt.Fprintf(w, "\nserver CPU per answered request (user + system, from /proc), µs, %s client\n\n", c)
		printRounds(w, names, rounds, " cpu", "%.1f", false)
		fmt.Fprintf(w, "\nload generator CPU per answered request, µs, %s client\n\n", c)
		printRounds(w, names, rounds, " client cpu", "%.1f", false)
		fmt.Fprintf(w, "\nserver read and write syscalls per answered request (from /proc), %s client\n\n", c)
		printRounds(w, names, rounds, " syscalls", "%.2f", false)
	}
}

// printRounds prints one table of the rounds: each target's value (under
// its name plus suffix, formatted by format), with the fraction of the
// same round's ceiling when ceiling is set, a row per round and a median
// row.
func printRounds(w io.Writer, names []string, rounds []map[string]float64, suffix, format string, ceiling bool) {
	tableHead(w, names)
	vals, ratios := map[string][]float64{}, map[string][]float64{}
	for i, r := range rounds {
		fmt.Fprintf(w, "| %d |", i+1)
		for _, n := range names {
			v := r[n+suffix]
			vals[n] = append(vals[n], v)
			if !ceiling || n == "nowork" || r["nowork"] == 0 {
				fmt.Fprintf(w, " "+format+" |", v)
				continue
			}
			ratios[n] = append(ratios[n], v/r["nowork"])
			fmt.Fprintf(w, " "+format+" (%.2f) |", v, v/r["nowork"])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "| median |")
	for _, n := range names {
		if len(ratios[n]) == 0 {
			fmt.Fprintf(w, " "+format+" |", median(vals[n]))
			continue
		}
		fmt.Fprintf(w, " "+format+" (%.2f) |", median(vals[n]), median(ratios[n]))
	}
	fmt.Fprintln(w)
}
