package proxy

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// stormPath is the tag the storm tests ask for.
const stormPath = "/v2/library/storm/manifests/latest"

// expiredTag is a mirror (tag TTL a minute) that has served stormPath's
// manifest, want, and whose record of the tag has expired since.
func expiredTag(t *testing.T) (*hotMirror, digest.Digest) {
	m := startHotMirror(t, func(o *Options) { o.TagTTL = time.Minute })
	img := m.up.PushRandomImage(t, "library/storm", "latest", 1, 512)
	want := testupstream.Digest(t, img)
	if code, _, got := m.ask(t, http.MethodGet, stormPath); code != 200 || got != want {
		t.Fatalf("first GET: %d %s", code, got)
	}
	m.clock.Advance(2 * time.Minute) // the tag expires
	return m, want
}

// TestTagStormJoinsBeforeReadingTheIndex: while an expired tag is being
// revalidated, the clients that ask for it join the revalidation without
// reading the tag's record: a storm reads the index a few times, not once
// per client, and every client gets the revalidated manifest from the one
// upstream HEAD.
func TestTagStormJoinsBeforeReadingTheIndex(t *testing.T) {
	m, want := expiredTag(t)
	heads := m.up.ManifestRequests(http.MethodHead)
	gate := m.up.GateManifestHeads()
	tagsBefore := m.store.tags.Load()

	const joiners = 50
	type answer struct {
		code int
		how  string
		ok   bool
	}
	answers := make(chan answer, joiners+1)
	ask := func() {
		code, how, got := m.ask(t, http.MethodGet, stormPath)
		answers <- answer{code, how, got == want}
	}
	go ask() // the leader: reads the record, starts the revalidation
	<-gate.Arrived()
	var wg sync.WaitGroup
	for range joiners {
		wg.Add(1)
		go func() { defer wg.Done(); ask() }()
	}
	w := m.tagWaits.find(tagKey{"docker.io", "library/storm", "latest"})
	if w == nil {
		t.Fatal("the revalidation held at the gate is not joinable")
	}
	for deadline := time.Now().Add(10 * time.Second); w.joined.Load() < joiners; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients joined the revalidation", w.joined.Load(), joiners)
		}
	}
	gate.Open()
	wg.Wait()
	for range joiners + 1 {
		a := <-answers
		if a.code != 200 || !a.ok || (a.how != "revalidated" && a.how != "join") {
			t.Fatalf("answer %+v", a)
		}
	}
	if n := m.up.ManifestRequests(http.MethodHead) - heads; n != 1 {
		t.Errorf("upstream HEADs = %d, want 1", n)
	}
	if n := m.store.tags.Load() - tagsBefore; n > 5 {
		t.Errorf("%d clients of a tag being revalidated read its record %d times; want a few (the leader's), not one per client", joiners+1, n)
	}
}

// TestTagStormAnsweredBeforeTheRecordIsWritten: the clients of a tag's
// revalidation get their answer as soon as upstream confirmed the tag,
// not after the index has written (and fsynced) the tag's new record;
// clients that come while the record is being written join the answer
// too, with no second HEAD; the record is written. Both when upstream
// confirms the tag and when it moved (the new manifest is fetched first).
func TestTagStormAnsweredBeforeTheRecordIsWritten(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(map[bool]string{false: "confirmed", true: "moved"}[moved], func(t *testing.T) {
			tagStormAnsweredBeforeTheRecordIsWritten(t, moved)
		})
	}
}

func tagStormAnsweredBeforeTheRecordIsWritten(t *testing.T, moved bool) {
	m, want := expiredTag(t)
	leaderHow := "revalidated"
	if moved {
		want = testupstream.Digest(t, m.up.PushRandomImage(t, "library/storm", "latest", 1, 512))
		leaderHow = "miss"
	}
	heads := m.up.ManifestRequests(http.MethodHead)
	gate := m.up.GateManifestHeads()
	m.store.holdSetTag, m.store.setTagHeld = make(chan struct{}), make(chan struct{})

	type answer struct {
		code int
		how  string
		ok   bool
	}
	answers := make(chan answer, 64)
	ask := func() {
		code, how, got := m.ask(t, http.MethodGet, stormPath)
		answers <- answer{code, how, got == want}
	}
	wantAnswers := func(n int, when string) {
		t.Helper()
		for range n {
			select {
			case a := <-answers:
				if a.code != 200 || !a.ok || a.how != "join" {
					t.Fatalf("%s: answer %+v, want the joined revalidation's", when, a)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: clients still wait while the tag's record is being written", when)
			}
		}
	}
	go ask() // the leader
	<-gate.Arrived()
	w := m.tagWaits.find(tagKey{"docker.io", "library/storm", "latest"})
	const early, late = 20, 10
	for range early {
		go ask()
	}
	for deadline := time.Now().Add(10 * time.Second); w.joined.Load() < early; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients joined the revalidation", w.joined.Load(), early)
		}
	}
	gate.Open()
	<-m.store.setTagHeld // upstream confirmed; the record's write is held
	wantAnswers(early, "joined before upstream answered")
	for range late {
		go ask()
	}
	wantAnswers(late, "came during the write")
	close(m.store.holdSetTag)
	if a := <-answers; a.code != 200 || !a.ok || a.how != leaderHow {
		t.Fatalf("the leader's answer %+v", a)
	}
	if n := m.up.ManifestRequests(http.MethodHead) - heads; n != 1 {
		t.Errorf("upstream HEADs = %d, want 1", n)
	}
	rec, err := m.store.Store.Tag("docker.io", "library/storm", "latest")
	if err != nil || rec.Digest != want || !rec.CheckedAt.Equal(m.clock.Now()) {
		t.Errorf("tag record %+v, %v: want %s checked now (%v)", rec, err, want, m.clock.Now())
	}
}
