package status

import (
	"fmt"
	"testing"
	"time"
)

// clock is a test clock the Recorder reads.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRatiosSinceStartAndLastHour(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	r := New(Options{Now: c.now})
	ev := func(outcome string, bytes int64) {
		r.Request(Event{Time: c.t, Registry: "docker.io", Repo: "library/a", Endpoint: "blob", Outcome: outcome, FromCache: outcome == "hit", Status: 200, Bytes: bytes})
	}
	ev("miss", 1000)
	r.Upstream("docker.io", 1000, false)
	c.t = c.t.Add(61 * time.Minute) // the miss leaves the hour window
	ev("hit", 1000)
	ev("hit", 1000)
	ev("join", 500)
	ev("", 0) // an error: not a hit nor a miss

	m := r.Model(nil)
	if s := m.SinceStart; s.Requests != 4 || s.Hits != 2 || s.HitRatio != 0.5 || s.BytesServed != 3500 ||
		s.BytesFromHits != 2000 || s.UpstreamBytes != 1000 || s.SavedBytes != 2000 {
		t.Errorf("since start %+v", s)
	}
	if h := m.LastHour; h.Requests != 3 || h.Hits != 2 || h.UpstreamBytes != 0 || h.BytesServed != 2500 {
		t.Errorf("last hour %+v", h)
	}
	c.t = c.t.Add(2 * time.Hour)
	if h := r.Model(nil).LastHour; h.Requests != 0 || h.HitRatio != 0 {
		t.Errorf("an idle hour later: %+v", h)
	}
}

func TestRecentPullsRing(t *testing.T) {
	c := &clock{time.Unix(0, 0)}
	r := New(Options{Now: c.now, RecentPulls: 3})
	for i := range 5 {
		r.Request(Event{Time: c.t, Registry: "docker.io", Repo: "library/a", Ref: fmt.Sprint(i), Endpoint: "manifest", Outcome: "hit", FromCache: true, Status: 200})
		r.Request(Event{Time: c.t, Registry: "docker.io", Repo: "library/a", Endpoint: "blob", Outcome: "hit", FromCache: true, Status: 200})
	}
	got := r.Model(nil).RecentPulls
	if len(got) != 3 || got[0].Ref != "4" || got[1].Ref != "3" || got[2].Ref != "2" {
		t.Errorf("recent pulls %+v, want 4, 3, 2 (newest first, manifests only)", got)
	}
}

func TestReposBoundedAndTop(t *testing.T) {
	c := &clock{time.Unix(0, 0)}
	r := New(Options{Now: c.now, MaxRepos: 100, Top: 3})
	for i := range 1000 {
		repo := fmt.Sprintf("r%d", i)
		for range i % 7 {
			r.Request(Event{Time: c.t, Registry: "docker.io", Repo: repo, Endpoint: "manifest", Outcome: "hit", FromCache: true, Status: 200, Bytes: int64(i)})
		}
		if i%7 == 0 {
			r.Request(Event{Time: c.t, Registry: "docker.io", Repo: repo, Endpoint: "blob", Outcome: "hit", FromCache: true, Status: 200, Bytes: 1})
		}
	}
	if n := len(r.repos); n > 100 {
		t.Fatalf("%d repositories kept, bound 100", n)
	}
	m := r.Model(nil)
	if len(m.TopByPulls) != 3 || m.TopByPulls[0].Pulls != 6 {
		t.Errorf("top by pulls %+v", m.TopByPulls)
	}
	if len(m.TopByBytes) != 3 || m.TopByBytes[0].Repo != "r999" && m.TopByBytes[0].Bytes < m.TopByBytes[1].Bytes {
		t.Errorf("top by bytes %+v", m.TopByBytes)
	}
}

func TestModelHidesWhatTheClientMayNotPull(t *testing.T) {
	c := &clock{time.Unix(0, 0)}
	r := New(Options{Now: c.now, Sources: Sources{
		Downloads: func() []Download {
			return []Download{{Digest: "sha256:aa", Registry: "corp", Repo: "secret/app"}, {Digest: "sha256:bb", Registry: "docker.io", Repo: "library/a"}}
		},
		Registries: func() []State { return []State{{Name: "corp"}, {Name: "docker.io"}} },
	}})
	for _, repo := range []string{"secret/app", "library/a"} {
		reg := "docker.io"
		if repo == "secret/app" {
			reg = "corp"
		}
		r.Request(Event{Time: c.t, Registry: reg, Repo: repo, Endpoint: "manifest", Outcome: "miss", Status: 200, Bytes: 10})
	}
	m := r.Model(func(registry, _ string) bool { return registry != "corp" })
	for _, list := range [][]Repo{m.TopByBytes, m.TopByPulls} {
		if len(list) != 1 || list[0].Repo != "library/a" {
			t.Errorf("top list %+v shows what the client may not pull", list)
		}
	}
	if len(m.RecentPulls) != 1 || len(m.Downloads) != 1 || m.RecentPulls[0].Repo != "library/a" || m.Downloads[0].Repo != "library/a" {
		t.Errorf("recent %+v, downloads %+v", m.RecentPulls, m.Downloads)
	}
	if m.SinceStart.Requests != 2 || len(m.Registries) != 2 {
		t.Errorf("totals and registries are figures without names: %+v", m)
	}
}

func TestPageAssets(t *testing.T) {
	for _, name := range []string{"index.html", "status.css", "status.js"} {
		if a, ok := Page(name); !ok || len(a.Body) == 0 {
			t.Errorf("page file %s missing", name)
		}
	}
	for _, name := range []string{"../doc.go", "web/index.html", "x.html", "embed.go"} {
		if _, ok := Page(name); ok {
			t.Errorf("Page(%q) served something", name)
		}
	}
}
