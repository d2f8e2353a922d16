package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/eviction"
)

// defaultVerifyRate leaves a live server's disk mostly to its clients.
const defaultVerifyRate = "100MiB/s"

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "re-hash every cached blob; remove (or with --repair fetch again) those that do not match their digest",
		Description: "Works on the data dir directly when no server uses it, else asks the running server " +
			"(see --server), which reads at --rate so that it stays fast for its clients. " +
			"Exits non-zero when a corrupt blob was found and not fetched again.",
		Flags: append(manageFlags(
			&cli.BoolFlag{Name: "repair", Usage: "fetch corrupt blobs again from upstream, through the mirror (verified like any pull)"},
			&cli.StringFlag{Name: "rate", Value: defaultVerifyRate, Usage: `how fast to read the cache, e.g. "100MiB/s"; "0" for as fast as the disk goes`},
		), upstreamFlags()...),
		Action: func(c *cli.Context) error {
			rate, err := parseRate(c.String("rate"))
			if err != nil {
				return fmt.Errorf("--rate: %w", err)
			}
			if !c.Bool("repair") {
				return withTarget(c, reachCache, func(ctx context.Context, ca *target) error {
					res, err := runVerify(ctx, c, ca.Ops, ca.Where, rate)
					if err != nil {
						return err
					}
					if n := len(res.Corrupt); n > 0 {
						return fmt.Errorf("verify: %d corrupt or missing blobs removed; the next pull fetches them again (or run verify --repair)", n)
					}
					return nil
				})
			}
			cfg, _, err := setup(c)
			if err != nil {
				return err
			}
			if cfg.Offline {
				return errors.New("verify --repair: the mirror is configured offline; nothing can be fetched again")
			}
			return withTarget(c, reachMirror, func(ctx context.Context, t *target) error {
				res, err := runVerify(ctx, c, t.Ops, t.Where, rate)
				if err != nil {
					return err
				}
				return repairAll(ctx, c.App.Writer, t, res.Corrupt)
			})
		},
	}
}

// runVerify verifies the cache through ops with a progress bar and prints
// what it found.
func runVerify(ctx context.Context, c *cli.Context, ops admin.Ops, where string, rate int64) (admin.VerifyResult, error) {
	v, ok := ops.(admin.Verifier)
	if !ok {
		return admin.VerifyResult{}, errors.New("verify: not supported here")
	}
	pg := newProgress(c.App.ErrWriter)
	b := pg.bar("verify " + where)
	var shown int64
	res, err := v.Verify(ctx, rate, func(done, total int64) {
		if total > b.total {
			b.Grow(total - b.total)
		}
		if done > b.total { // the cache grew during the run
			b.Grow(done - b.total)
		}
		b.Add(done - shown)
		shown = done
	})
	if err != nil {
		b.Fail()
	} else {
		b.Done()
	}
	pg.Wait()
	w := c.App.Writer
	missing := 0
	for _, cb := range res.Corrupt {
		if cb.Missing {
			missing++
			fmt.Fprintf(w, "MISSING  %s (%s, %s): file gone, record dropped\n", cb.Digest, humanize.IBytes(uint64(cb.Size)), seenIn(cb))
			continue
		}
		fmt.Fprintf(w, "CORRUPT  %s (%s, %s) removed\n", cb.Digest, humanize.IBytes(uint64(cb.Size)), seenIn(cb))
	}
	fmt.Fprintf(w, "verified %d blobs (%s) in %s: %d corrupt", res.Blobs, humanize.IBytes(uint64(res.Bytes)), where, len(res.Corrupt)-missing)
	if missing > 0 {
		fmt.Fprintf(w, ", %d missing", missing)
	}
	if res.Vanished > 0 {
		fmt.Fprintf(w, ", %d evicted during the run", res.Vanished)
	}
	fmt.Fprintln(w)
	return res, err
}

func seenIn(cb admin.CorruptBlob) string {
	if cb.Repo == "" {
		return "no repository known"
	}
	return cb.Registry + "/" + cb.Repo
}

// repairAll fetches every corrupt blob again through the mirror at base:
// a miss there is an upstream fetch, verified and cached like any pull.
func repairAll(ctx context.Context, w io.Writer, t *target, corrupt []admin.CorruptBlob) error {
	base := t.URL
	client := &http.Client{Transport: t.PullTransport()}
	defer client.CloseIdleConnections()
	var failed int
	for _, cb := range corrupt {
		if err := refetch(ctx, client, base, cb); err != nil {
			failed++
			fmt.Fprintf(w, "NOT REPAIRED  %s: %v\n", cb.Digest, err)
			continue
		}
		fmt.Fprintf(w, "repaired %s from %s\n", cb.Digest, seenIn(cb))
	}
	if failed > 0 {
		return fmt.Errorf("verify --repair: %d of %d corrupt blobs could not be fetched again (they were removed; a pull fetches them when upstream has them)", failed, len(corrupt))
	}
	return nil
}

// manifestTypes are fetched again as manifests (GET .../manifests/<digest>);
// everything else as a blob.
var manifestTypes = []string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

func refetch(ctx context.Context, client *http.Client, base string, cb admin.CorruptBlob) error {
	if cb.Repo == "" {
		return errors.New("no repository is known to hold it")
	}
	kind := "blobs"
	for _, mt := range manifestTypes {
		if cb.MediaType == mt {
			kind = "manifests"
		}
	}
	u := base + "/v2/" + cb.Repo + "/" + kind + "/" + cb.Digest.String() + "?ns=" + url.QueryEscape(cb.Registry)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if kind == "manifests" {
		req.Header.Set("Accept", strings.Join(manifestTypes, ", "))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cb.Digest.String() || n != cb.Size {
		return fmt.Errorf("fetched %d bytes with digest %s, want %d bytes", n, got, cb.Size)
	}
	return nil
}

// parseRate reads a byte rate: a size as eviction.ParseSize reads it, with
// or without "/s" ("100MiB/s", "50MB"). "0" means unlimited.
func parseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "/s"), "/S")
	if t == "0" {
		return 0, nil
	}
	n, err := eviction.ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("%q: want a rate like 100MiB/s, or 0 for unlimited: %w", s, err)
	}
	return n, nil
}

// registerVerifyMetrics exports the cache's verification counters.
func registerVerifyMetrics(reg *prometheus.Registry, store *cache.Store) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "regmirror_scrub_verified_total",
			Help: "Blobs re-hashed by the background scrub or regmirror verify.",
		}, func() float64 { return float64(store.VerifyStats().Verified) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "regmirror_scrub_failed_total",
			Help: "Blobs found not to match their digest (scrub, verify, or a read that hashes) and removed, to be fetched again.",
		}, func() float64 { return float64(store.VerifyStats().Failed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "regmirror_scrub_passes_total",
			Help: "Background scrub passes finished.",
		}, func() float64 { return float64(store.VerifyStats().ScrubPasses) }),
	)
}
