package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/status"
)

// ScreenshotDirEnv names a directory where TestStatusPageInBrowser leaves
// its screenshot (default: the test's temp dir). With UpdateScreenshotEnv=1
// it also replaces docs/status.png, the README's picture.
const (
	ScreenshotDirEnv    = "REGMIRROR_SCREENSHOT_DIR"
	UpdateScreenshotEnv = "REGMIRROR_UPDATE_SCREENSHOT"
)

// pageFigure is one figure as the browser shows it.
type pageFigure struct {
	Field string `json:"field"`
	Fmt   string `json:"fmt"`
	Text  string `json:"text"`
	Value string `json:"value"`
}

// pageRow is one table row: its key and its figures by name.
type pageRow struct {
	Key   string                `json:"key"`
	Cells map[string]pageFigure `json:"cells"`
}

// pageView is what the test reads out of the page in one evaluation, so
// that the model and the DOM come from the same render.
type pageView struct {
	Model      json.RawMessage `json:"model"`
	Figures    []pageFigure    `json:"figures"`
	Registries []pageRow       `json:"registries"`
	Downloads  []pageRow       `json:"downloads"`
	Recent     int             `json:"recent"`
	Watch      []pageRow       `json:"watch"`
	Sources    []string        `json:"sources"`
	TopBytes   []pageRow       `json:"top_bytes"`
	Health     string          `json:"health"`
}

const readPage = `(() => {
  const rows = (sel) => [...document.querySelectorAll(sel + " tbody tr")].map((tr) => ({
    key: tr.dataset.key || "",
    cells: Object.fromEntries([...tr.querySelectorAll("[data-k]")].map((e) =>
      [e.dataset.k, { field: e.dataset.k, text: e.textContent, value: e.dataset.value }])),
  }));
  return {
    model: window.__status,
    figures: [...document.querySelectorAll("[data-field]")].map((e) =>
      ({ field: e.dataset.field, fmt: e.dataset.fmt || "", text: e.textContent, value: e.dataset.value || "" })),
    registries: rows("#registries"),
    downloads: rows("#downloads"),
    recent: document.querySelectorAll("#recent tbody tr").length,
    watch: rows("#watch"),
    sources: [...document.querySelectorAll("#registries .sources span")].map((e) => e.textContent),
    top_bytes: rows("#top-bytes"),
    health: document.getElementById("health").textContent,
  };
})()`

// The page's formats, as status.js writes them.
func fmtBytes(v float64) string {
	if v < 1024 {
		return strconv.FormatFloat(v, 'f', -1, 64) + " B"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", math.Floor(v*10+0.5)/10, units[i])
}

func fmtPage(kind string, v float64) string {
	switch kind {
	case "bytes":
		return fmtBytes(v)
	case "pct":
		return fmt.Sprintf("%.1f%%", math.Floor(v*1000+0.5)/10)
	case "budget":
		if v <= 0 {
			return "none"
		}
		return fmtBytes(v)
	case "free":
		if v < 0 {
			return "unknown"
		}
		return fmtBytes(v)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// jsonPath reads a dotted path out of a decoded JSON object.
func jsonPath(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = o[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func TestStatusPageInBrowser(t *testing.T) {
	browser := realclient.Require(t, "chromium")
	ghcrMirror := testupstream.Start(t) // empty: ghcr.io content comes from the origin after its 404
	r := startRegistries(t, func(c *config) {
		c.Cache.MaxSize = "256MiB"
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/alpine:3.20"}, Interval: duration{time.Hour}}}
		c.registry(ghcrName).Mirrors = []mirrorConfig{{URL: ghcrMirror.URL()}}
		c.registry(ghcrName).AllowPrivateAddresses = []string{"127.0.0.1/32"}
	})
	r.hub.PushRandomImage(t, "library/alpine", "3.20", 2, 256<<10)
	r.hub.PushRandomImage(t, "library/nginx", "1.27", 3, 512<<10)
	_, big := r.hub.PushLargeBlobImage(t, "library/postgres", "16", 24<<20)
	r.ghcr.PushRandomImage(t, "org/tool", "v1", 1, 128<<10)
	r.hub.SetRateLimit(100)
	r.m.app.watch.RunNow(context.Background()) // the watch list's pass, done before the page is read
	eventually(t, "the watch list's first pass", func() bool {
		w := statusModel(t, r.m).Watch
		return len(w) == 1 && w[0].Result != "" && w[0].Result != "deferred"
	})
	pullAll(t, r.m, "library/alpine:3.20")
	pullAll(t, r.m, "library/alpine:3.20")
	pullAll(t, r.m, "library/nginx:1.27")
	pullNS(t, r.m, ghcrName, "org/tool", "v1")
	if resp, _ := get(t, http.MethodGet, r.m.url+"/v2/library/postgres/manifests/16"); resp.StatusCode != http.StatusOK {
		t.Fatalf("postgres manifest: %d", resp.StatusCode)
	}

	// A download in progress: upstream holds the layer after 9 MiB, and
	// two clients follow it.
	const held = 9 << 20
	gate := r.hub.Gate(big).SetHeadBytes(held)
	defer gate.Open()
	blobURL := r.m.url + "/v2/library/postgres/blobs/" + big.String()
	for range 2 {
		resp, _ := startDownload(t, blobURL, 1<<20)
		defer resp.Body.Close()
	}
	eventually(t, "the held download to reach the gate", func() bool {
		sm := statusModel(t, r.m)
		return len(sm.Downloads) == 1 && sm.Downloads[0].Done == held && sm.Downloads[0].Followers == 2
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx,
		chromedp.Navigate(r.m.url+"/"),
		chromedp.WaitVisible(`body[data-generated]`),
	); err != nil {
		t.Fatalf("loading the page in %s: %v", browser, err)
	}
	view, err := chromedp.Run(bctx, chromedp.Evaluate[pageView](readPage))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv(ScreenshotDirEnv)
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shot, len(png))
	if os.Getenv(UpdateScreenshotEnv) == "1" {
		if err := os.WriteFile(filepath.Join("docs", "status.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Every figure shown is the model's value, formatted.
	var model map[string]any
	if err := json.Unmarshal(view.Model, &model); err != nil {
		t.Fatalf("the page's model: %v", err)
	}
	checked := 0
	for _, f := range view.Figures {
		if f.Field == "uptime" || f.Field == "version" {
			continue
		}
		v, ok := jsonPath(model, f.Field)
		n, isNum := v.(float64)
		if !ok || !isNum {
			t.Errorf("page figure %s: no number in the model (%v)", f.Field, v)
			continue
		}
		if want := fmtPage(f.Fmt, n); f.Text != want || f.Value != strconv.FormatFloat(n, 'f', -1, 64) {
			t.Errorf("page shows %s = %q (value %s), the model says %v → %q", f.Field, f.Text, f.Value, n, want)
		}
		checked++
	}
	if checked < 15 {
		t.Errorf("only %d figures checked", checked)
	}

	// And the model is the JSON the mirror serves (the figures that do not
	// move while the download is held).
	var sm status.Model
	if err := json.Unmarshal(view.Model, &sm); err != nil {
		t.Fatal(err)
	}
	now := statusModel(t, r.m)
	if sm.SinceStart.Requests != now.SinceStart.Requests || sm.SinceStart.Hits != now.SinceStart.Hits ||
		sm.Cache.UsedBytes != now.Cache.UsedBytes || sm.Cache.Blobs != now.Cache.Blobs || sm.Cache.BudgetBytes != 256<<20 {
		t.Errorf("page model %+v / %+v, mirror JSON %+v / %+v", sm.SinceStart, sm.Cache, now.SinceStart, now.Cache)
	}
	if sm.SinceStart.Hits == 0 || sm.SinceStart.Misses == 0 || sm.SinceStart.SavedBytes == 0 {
		t.Errorf("the traffic left no hits, misses or savings: %+v", sm.SinceStart)
	}
	if len(view.Downloads) != 1 || view.Downloads[0].Key != big.String() ||
		view.Downloads[0].Cells["bytes_done"].Value != strconv.Itoa(held) || view.Downloads[0].Cells["clients"].Text != "2" {
		t.Errorf("downloads shown %+v, want %s at %d bytes with 2 clients", view.Downloads, big, held)
	}
	if len(view.Registries) != 3 {
		t.Errorf("registries shown: %+v", view.Registries)
	}
	for _, row := range view.Registries {
		var reg *status.Registry
		for i := range now.Registries {
			if now.Registries[i].Name == row.Key {
				reg = &now.Registries[i]
			}
		}
		if reg == nil || row.Cells["requests"].Value != strconv.FormatInt(reg.Requests, 10) {
			t.Errorf("registry row %s: %+v, JSON %+v", row.Key, row.Cells, reg)
			continue
		}
		if row.Key == "docker.io" && (row.Cells["remaining"].Text != strconv.Itoa(r.hub.RateLimitRemaining()) || row.Cells["limit"].Text != "100") {
			t.Errorf("docker.io pull budget shown %+v, upstream has %d of 100", row.Cells, r.hub.RateLimitRemaining())
		}
	}
	if view.Recent != len(now.RecentPulls) || view.Recent < 4 {
		t.Errorf("%d recent pulls shown, JSON has %d", view.Recent, len(now.RecentPulls))
	}
	if len(view.Watch) != 1 || len(now.Watch) != 1 || view.Watch[0].Key != now.Watch[0].Image ||
		view.Watch[0].Cells["failures"].Value != strconv.FormatInt(now.Watch[0].Failures, 10) {
		t.Errorf("watch list shown %+v, JSON %+v", view.Watch, now.Watch)
	}
	if len(view.Sources) != 2 || !strings.Contains(view.Sources[0], "mirror "+ghcrMirror.URL()) || !strings.Contains(view.Sources[1], "origin "+r.ghcr.URL()) {
		t.Errorf("ghcr.io's sources shown %q", view.Sources)
	}
	if len(view.TopBytes) == 0 || view.Health != "healthy" {
		t.Errorf("top by bytes %+v, health %q", view.TopBytes, view.Health)
	}
	t.Logf("page showed: %d requests, hit ratio %.1f%%, byte hit ratio %.1f%%, saved %s; download %s at %s of %s, %d clients; docker.io budget %d/100",
		sm.SinceStart.Requests, 100*sm.SinceStart.HitRatio, 100*sm.SinceStart.ByteHitRatio, fmtBytes(float64(sm.SinceStart.SavedBytes)),
		big.Encoded()[:12], fmtBytes(held), fmtBytes(float64(sm.Downloads[0].Size)), sm.Downloads[0].Followers, r.hub.RateLimitRemaining())
}
