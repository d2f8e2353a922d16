// Command scale generates large caches and measures how regmirror restarts
// on them: the time from exec to the first 200 from /v2/, and the resident
// memory once it serves, after a clean stop (SIGTERM) and after a crash
// (SIGKILL). See the README's "Benchmarks at scale".
//
//	go run ./bench/scale -bin /tmp/regmirror -dir /var/tmp/rm100k -n 100000 -runs 3
//
// The cache is generated once per directory (small verified files written
// directly, then indexed by opening it with the cache package, whose
// reconcile hashes each file and writes its record) and reused by later
// runs; -n must match.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/regmirror/regmirror/cache"
)

func main() {
	bin := flag.String("bin", "", "regmirror binary to measure (required unless -gen-only)")
	dir := flag.String("dir", "", "data dir (generated if it holds no blobs)")
	n := flag.Int("n", 100_000, "number of blobs to generate")
	runs := flag.Int("runs", 3, "measurements per mode")
	genOnly := flag.Bool("gen-only", false, "only generate the cache")
	waitLoaded := flag.Bool("wait-loaded", true, "wait (up to 10 minutes) for the background eviction load before reading RSS; false for versions without it")
	flag.Parse()
	if *dir == "" || (*bin == "" && !*genOnly) {
		flag.Usage()
		os.Exit(2)
	}
	if err := generate(*dir, *n); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
	if *genOnly {
		return
	}
	fmt.Printf("| blobs | start after | restart to /v2/ 200 | eviction loaded | RSS then (anon + file) | load (uptime) |\n|---|---|---|---|---|---|\n")
	for _, mode := range []string{"clean stop", "SIGKILL"} {
		for r := 0; r < *runs; r++ {
			// Prepare: a start, then the stop the mode names.
			p, _, err := start(*bin, *dir)
			if err != nil {
				fail(err)
			}
			if mode == "clean stop" {
				err = p.stop(syscall.SIGTERM)
			} else {
				err = p.stop(syscall.SIGKILL)
			}
			if err != nil {
				fail(err)
			}
			p, took, err := start(*bin, *dir)
			if err != nil {
				fail(err)
			}
			// Versions that load eviction before serving print no such
			// line: their figure is the restart time.
			loaded := "-"
			wait := 2 * time.Second
			if *waitLoaded {
				wait = 10 * time.Minute
			}
			select {
			case at := <-p.loaded:
				loaded = at.Sub(p.t0).Round(time.Millisecond).String()
			case <-time.After(wait):
			}
			time.Sleep(500 * time.Millisecond)
			rss, anon, file := p.rss()
			if err := p.stop(syscall.SIGTERM); err != nil {
				fail(err)
			}
			fmt.Printf("| %d | %s | %v | %s | %.1f MiB (%.1f + %.1f) | %s |\n", *n, mode, took.Round(time.Millisecond), loaded,
				mib(rss), mib(anon), mib(file), loadavg())
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// generate writes n small blobs (64 to 4,159 bytes) under dir/blobs and
// indexes them through cache.Open, unless dir already holds blobs.
func generate(dir string, n int) error {
	blobDir := filepath.Join(dir, "blobs", "sha256")
	if ents, err := os.ReadDir(blobDir); err == nil && len(ents) > 0 {
		return nil
	}
	start := time.Now()
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(blobDir, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return err
		}
	}
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64+4096)
			for i := w; i < n; i += workers {
				size := 64 + (i*7919)%4096
				binary.BigEndian.PutUint64(buf, uint64(i))
				for j := 8; j < size; j++ {
					buf[j] = byte(i + j)
				}
				sum := sha256.Sum256(buf[:size])
				hx := hex.EncodeToString(sum[:])
				if err := os.WriteFile(filepath.Join(blobDir, hx[:2], hx), buf[:size], 0o600); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %d files in %v; indexing\n", n, time.Since(start).Round(time.Millisecond))
	s, err := cache.Open(cache.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	_, blobs := s.Usage()
	if err := s.Close(); err != nil {
		return err
	}
	if blobs != n {
		return fmt.Errorf("indexed %d blobs, want %d", blobs, n)
	}
	fmt.Fprintf(os.Stderr, "generated %d blobs in %v\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

type proc struct {
	cmd    *exec.Cmd
	t0     time.Time
	done   chan struct{}
	loaded chan time.Time // when eviction had loaded the cache (background load)
}

var listenAttr = regexp.MustCompile(`listen=(\S+)`)

// start runs `bin serve` on dir and returns once /v2/ answers 200, with
// the time that took from exec.
func start(bin, dir string) (*proc, time.Duration, error) {
	t0 := time.Now()
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--log-level", "info",
		"--data-dir", dir, "--upstream-url", "http://127.0.0.1:9")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, 0, err
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	p := &proc{cmd: cmd, t0: t0, done: make(chan struct{}), loaded: make(chan time.Time, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "eviction loaded the cache") {
				p.loaded <- time.Now()
			}
			if m := listenAttr.FindStringSubmatch(sc.Text()); m != nil && strings.Contains(sc.Text(), "serving") {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a + "/v2/"
	case <-p.done:
		return nil, 0, errors.New("regmirror exited before serving")
	case <-time.After(5 * time.Minute):
		p.stop(syscall.SIGKILL)
		return nil, 0, errors.New("regmirror did not start")
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, time.Since(t0), nil
			}
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *proc) stop(sig syscall.Signal) error {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Minute):
		p.cmd.Process.Kill()
		return errors.New("regmirror did not stop")
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// rss returns the process's resident memory: total, anonymous (its heap)
// and file-backed (mostly Badger's memory-mapped tables, which the kernel
// can drop at will).
func (p *proc) rss() (total, anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0, 0
	}
	kb := func(rest string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		return n << 10
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			total = kb(rest)
		} else if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			anon = kb(rest)
		} else if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			file = kb(rest)
		}
	}
	return total, anon, file
}
