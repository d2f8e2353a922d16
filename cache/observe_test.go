package cache

import (
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// TestSubscribeSeveralObservers: every subscriber hears every change, in
// subscription order; an unsubscribed one hears nothing more, and
// unsubscribing twice is harmless.
func TestSubscribeSeveralObservers(t *testing.T) {
	s := openStore(t, "")
	a, b := &recorder{}, &recorder{}
	unsubA := s.Subscribe(a)
	s.Subscribe(b)

	data, d := blob(100, 1)
	mustPut(t, s, data, d, "x")
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for name, r := range map[string]*recorder{"first": a, "second": b} {
		if r.count("added") != 1 || r.count("accessed") != 1 {
			t.Fatalf("%s observer heard %v, want one add and one access", name, r.events)
		}
	}

	unsubA()
	unsubA()
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if a.count("removed") != 0 {
		t.Fatal("an unsubscribed observer heard a removal")
	}
	if b.count("removed") != 1 {
		t.Fatalf("second observer heard %d removals, want 1", b.count("removed"))
	}
}

// TestSubscribeSameObserverTwice: each subscription is its own; removing
// one leaves the other.
func TestSubscribeSameObserverTwice(t *testing.T) {
	s := openStore(t, "")
	r := &recorder{}
	unsub1 := s.Subscribe(r)
	s.Subscribe(r)
	_, d := blob(10, 2)
	s.Touch(d)
	unsub1()
	s.Touch(d)
	if n := r.count("accessed"); n != 3 {
		t.Fatalf("heard %d accesses, want 2 then 1", n)
	}
}

// reentrant is an Observer that calls back into the Store: it proves that
// observers run outside the Store's locks (a call under a stripe or
// closeMu write lock would deadlock here).
type reentrant struct {
	s     *Store
	stats int
}

func (r *reentrant) BlobAdded(i BlobInfo) {
	if _, err := r.s.Stat(i.Digest); err == nil {
		r.stats++
	}
}
func (r *reentrant) BlobAccessed(d digest.Digest, _ time.Time) { r.s.Usage() }
func (r *reentrant) BlobRemoved(d digest.Digest) {
	if _, err := r.s.Stat(d); err != nil {
		r.stats++
	}
}

func TestObserverCalledOutsideLocks(t *testing.T) {
	s := openStore(t, "")
	r := &reentrant{s: s}
	s.Subscribe(r)
	data, d := blob(100, 3)
	mustPut(t, s, data, d, "x")
	s.Touch(d)
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if r.stats != 2 {
		t.Fatalf("observer saw the index in %d of 2 callbacks as it should be after the change", r.stats)
	}
}

// BenchmarkNotifyAccess: a hit's notification of three subscribers costs
// no allocation.
func BenchmarkNotifyAccess(b *testing.B) {
	var s Store
	for range 3 {
		s.Subscribe(nopObserver{})
	}
	_, d := blob(1, 1)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.obs.accessed(d, now)
	}
}

type nopObserver struct{}

func (nopObserver) BlobAdded(BlobInfo)                    {}
func (nopObserver) BlobAccessed(digest.Digest, time.Time) {}
func (nopObserver) BlobRemoved(digest.Digest)             {}

// addedInfos records the BlobInfo of every BlobAdded.
type addedInfos struct {
	nopObserver
	infos []BlobInfo
}

func (a *addedInfos) BlobAdded(i BlobInfo) { a.infos = append(a.infos, i) }

// TestScopedCommitsSaySo: content written for a registry scoped per
// repository (Writer.Scope, PutScoped) is announced as Scoped, so that the
// S3 tier can leave it out; any other commit is not.
func TestScopedCommitsSaySo(t *testing.T) {
	s := openStore(t, "")
	a := &addedInfos{}
	s.Subscribe(a)
	plain, dPlain := blob(100, 11)
	putScoped, dPutScoped := blob(100, 12)
	written, dWritten := blob(100, 13)
	mustPut(t, s, plain, dPlain, "x")
	if _, err := s.PutScoped(dPutScoped, "x", putScoped); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(dWritten, "x")
	if err != nil {
		t.Fatal(err)
	}
	w.Scope()
	if _, err := w.Write(written); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(int64(len(written))); err != nil {
		t.Fatal(err)
	}
	want := map[digest.Digest]bool{dPlain: false, dPutScoped: true, dWritten: true}
	if len(a.infos) != len(want) {
		t.Fatalf("heard %d adds, want %d", len(a.infos), len(want))
	}
	for _, info := range a.infos {
		if info.Scoped != want[info.Digest] {
			t.Errorf("%s announced with Scoped %v, want %v", info.Digest, info.Scoped, want[info.Digest])
		}
		if got, err := s.Stat(info.Digest); err != nil || got.Scoped {
			t.Errorf("Stat(%s) = %+v, %v: Scoped is the event's, not stored", info.Digest, got, err)
		}
	}
}
