package proxy

import (
	"net/http"
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

// tagStorm is clients asking for stormPath at once, each on a goroutine of
// its own; their answers arrive in order of completion.
type tagStorm struct {
	t       *testing.T
	m       *hotMirror
	want    digest.Digest
	answers chan stormAnswer
}

type stormAnswer struct {
	code int
	how  string // the cache header
	ok   bool   // the body is want's
	err  error  // the request's, if it failed
}

func newTagStorm(t *testing.T, m *hotMirror, want digest.Digest) *tagStorm {
	return &tagStorm{t: t, m: m, want: want, answers: make(chan stormAnswer, 128)}
}

// ask starts n clients.
func (s *tagStorm) ask(n int) {
	for range n {
		go func() {
			code, how, got, err := s.m.fetch(http.MethodGet, stormPath)
			s.answers <- stormAnswer{code, how, got == s.want, err}
		}()
	}
}

// next is the next answer; when says which ones are awaited.
func (s *tagStorm) next(when string) stormAnswer {
	s.t.Helper()
	select {
	case a := <-s.answers:
		if a.err != nil {
			s.t.Fatalf("%s: %v", when, a.err)
		}
		return a
	case <-time.After(10 * time.Second):
		s.t.Fatalf("%s: no answer in 10 s", when)
		return stormAnswer{}
	}
}

// joined waits until n clients have joined the tag's running
// revalidation.
func (s *tagStorm) joined(n int64) {
	s.t.Helper()
	w := s.m.tagWaits.find(tagKey{"docker.io", "library/storm", "latest"})
	if w == nil {
		s.t.Fatal("the revalidation held at the gate is not joinable")
	}
	eventually(s.t, "clients joining the revalidation", func() bool { return w.joined.Load() >= n })
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
	storm := newTagStorm(t, m, want)
	storm.ask(1) // the leader: reads the record, starts the revalidation
	<-gate.Arrived()
	storm.ask(joiners)
	storm.joined(joiners)
	gate.Open()
	for range joiners + 1 {
		if a := storm.next("after upstream answered"); a.code != 200 || !a.ok || (a.how != "revalidated" && a.how != "join") {
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
	hold := m.store.holdSetTags()
	defer hold.release() // a failure below must not leave the leader held

	storm := newTagStorm(t, m, want)
	wantJoined := func(n int, when string) {
		t.Helper()
		for range n {
			if a := storm.next(when + ", while the tag's record is being written"); a.code != 200 || !a.ok || a.how != "join" {
				t.Fatalf("%s: answer %+v, want the joined revalidation's", when, a)
			}
		}
	}
	storm.ask(1) // the leader
	<-gate.Arrived()
	const early, late = 20, 10
	storm.ask(early)
	storm.joined(early)
	gate.Open()
	hold.wait(t) // upstream confirmed; the record's write is held
	wantJoined(early, "joined before upstream answered")
	storm.ask(late)
	wantJoined(late, "came during the write")
	hold.release()
	if a := storm.next("the leader"); a.code != 200 || !a.ok || a.how != leaderHow {
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
