package main

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestGrafanaDashboardMetricsExist: every metric deploy/grafana's dashboard
// queries is one a running mirror exports.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("deploy/grafana/regmirror.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}

	// A mirror that has seen every kind of traffic the metrics describe,
	// Docker Hub's rate-limit headers included.
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	up.SetRateLimit(100)
	m := startMirror(t, up)
	pullAll(t, m, "library/alpine:3.20")
	pullAll(t, m, "library/alpine:3.20")
	resp, body := get(t, http.MethodGet, m.url+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exported[strings.Fields(name)[0]] = true
		} else if line != "" && !strings.HasPrefix(line, "#") {
			exported[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}
	metricName := regexp.MustCompile(`\bregmirror_[a-z_]+`)
	queried := 0
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			queried++
			if !exported[name] {
				t.Errorf("the dashboard queries %s, which the mirror does not export (in %q)", name, e)
			}
		}
	}
	if queried < 20 {
		t.Errorf("only %d metric references found in the dashboard", queried)
	}
}
