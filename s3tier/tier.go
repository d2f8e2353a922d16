package s3tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// Files is what the tier needs from the local cache (L1): the committed
// file of a digest, to upload it. *cache.Store has it. Open checks the
// file's size only; OpenVerified's reader fails at the end, and has the
// cache drop the blob, if the content is not d (damaged on disk since).
type Files interface {
	Open(d digest.Digest) (*os.File, cache.BlobInfo, error)
	OpenVerified(d digest.Digest) (io.ReadCloser, cache.BlobInfo, error)
}

// Options configures a Tier. Zero values take the defaults named.
type Options struct {
	// Endpoint is the store's URL: "https://s3.example.internal" (http for
	// a store on a trusted network or loopback).
	Endpoint  string
	Bucket    string
	Prefix    string // prepended to every object key, e.g. "site-a/"
	Region    string // default "us-east-1"
	AccessKey string
	SecretKey string
	// PathStyle addresses the bucket as a path (endpoint/bucket/key), as
	// most self-hosted stores want, instead of as a host name.
	PathStyle bool
	// Redirect answers blobs present in L2 but not L1, of RedirectMinSize
	// or more, with a presigned URL (see Source.BlobRedirect). Off by
	// default: clients in private subnets often cannot reach the store.
	Redirect bool
	// RedirectMinSize is the smallest blob redirected. Default 1 MiB.
	RedirectMinSize int64
	// RedirectExpiry is how long a presigned URL is valid. Default 15m.
	RedirectExpiry time.Duration

	// TagTTL is how long a tag record is answered without asking the next
	// source (the proxy's tag TTL). Default 5m.
	TagTTL time.Duration
	// Timeout bounds the wait for the store's answer (its response
	// headers) and every small request. Default 5s.
	Timeout time.Duration
	// Backoff is how long L2 is skipped after the store failed. Default 30s.
	Backoff time.Duration
	// StallTimeout fails a read of a blob body that waits this long for
	// the store (the fill resumes from the next source, and L2 is skipped
	// for Backoff). Default upstream.DefaultStallTimeout, as for upstream
	// bodies.
	StallTimeout time.Duration
	// UploadTimeout bounds one upload. Default 30m.
	UploadTimeout time.Duration
	// PartSize is the part size of multipart uploads: minio-go otherwise
	// picks sizes that buffer hundreds of MiB. Default 16 MiB.
	PartSize uint64
	// QueueSize bounds the upload backlog; a commit that finds it full is
	// not uploaded (counted as a failure). Default 10000.
	QueueSize int
	// Workers is how many uploads run at once. Default 2.
	Workers int

	// Files opens committed L1 files to upload them; nil: no uploads.
	Files Files
	// PendingDir remembers the blob uploads queued and not yet done, so
	// that the next start resumes them (pending.go); "": memory only.
	PendingDir string
	// Hold protects a digest from L1 eviction until release is called
	// (eviction's Hold); nil: no protection.
	Hold   func(d digest.Digest) (release func())
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Tier is a connection to the shared store: the upload queue (Observe it
// to the cache's commits), the breaker, and the figures. Wrap a registry's
// upstream with Source to read through it.
type Tier struct {
	o      Options
	client *minio.Client
	core   minio.Core
	log    *slog.Logger

	breakerMu sync.Mutex
	openUntil time.Time

	pending pending // queued blob uploads, remembered across restarts

	// ctx is the parent of uploads, cancelled by Close so that shutdown
	// does not wait for an upload in progress.
	ctx      context.Context
	cancel   context.CancelFunc
	queue    chan job
	stop     chan struct{}
	stopOnce sync.Once
	workers  sync.WaitGroup

	// known remembers digests recently seen in L2 (served from it or
	// uploaded), so their commits are not uploaded again.
	knownMu sync.Mutex
	known   map[digest.Digest]struct{}

	stats stats
}

type stats struct {
	backlog, uploads, uploadedBytes, already, failures, dropped            atomic.Int64
	hits, hitBytes, misses, errors, corrupt, tagHits, staleTags, redirects atomic.Int64
	breakerOpen                                                            atomic.Int64
}

// Stats are the tier's figures since start (Prometheus reads them).
type Stats struct {
	// Backlog is blobs and tag records waiting to be uploaded.
	Backlog int64
	// Uploads is objects written; Already, uploads another node had made
	// (a 412 or an object found present); Failures, attempts that failed
	// (retried only when the store was down); Dropped, commits not queued
	// because the queue was full or the file was gone.
	Uploads, UploadedBytes, Already, Failures, Dropped int64
	// Hits and HitBytes: blobs and manifests read from L2; Misses: asked
	// but absent; Errors: requests the store failed; Corrupt: objects
	// found not to match their digest (and deleted).
	Hits, HitBytes, Misses, Errors, Corrupt int64
	// TagHits: tags answered from a fresh record; StaleTags: from an old
	// one while the next source was down; Redirects: presigned URLs handed
	// out; BreakerOpens: times the store was marked down.
	TagHits, StaleTags, Redirects, BreakerOpens int64
	// Down is true while L2 is skipped after a failure.
	Down bool
}

// Stats returns the current figures.
func (t *Tier) Stats() Stats {
	s := &t.stats
	return Stats{
		Backlog: s.backlog.Load(), Uploads: s.uploads.Load(), UploadedBytes: s.uploadedBytes.Load(),
		Already: s.already.Load(), Failures: s.failures.Load(), Dropped: s.dropped.Load(),
		Hits: s.hits.Load(), HitBytes: s.hitBytes.Load(), Misses: s.misses.Load(), Errors: s.errors.Load(),
		Corrupt: s.corrupt.Load(), TagHits: s.tagHits.Load(), StaleTags: s.staleTags.Load(),
		Redirects: s.redirects.Load(), BreakerOpens: s.breakerOpen.Load(), Down: !t.usable(),
	}
}

const (
	defaultPartSize = 16 << 20
	maxKnown        = 1 << 16
)

// ErrConfig: the options cannot work (no endpoint, no bucket, a bad URL).
var ErrConfig = errors.New("s3tier: invalid configuration")

// New connects to the store (lazily: nothing is sent until used) and
// starts the upload workers. Close stops them.
func New(o Options) (*Tier, error) {
	if o.Endpoint == "" || o.Bucket == "" {
		return nil, fmt.Errorf("%w: endpoint and bucket are required", ErrConfig)
	}
	u, err := upstream.CheckBaseURL(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint: %w", ErrConfig, err)
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	setDefault(&o.TagTTL, 5*time.Minute)
	setDefault(&o.Timeout, 5*time.Second)
	setDefault(&o.Backoff, 30*time.Second)
	setDefault(&o.StallTimeout, upstream.DefaultStallTimeout)
	setDefault(&o.UploadTimeout, 30*time.Minute)
	setDefault(&o.RedirectExpiry, 15*time.Minute)
	if o.RedirectMinSize <= 0 {
		o.RedirectMinSize = 1 << 20
	}
	if o.PartSize == 0 {
		o.PartSize = defaultPartSize
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// The store answers within Timeout or counts as down; bodies may take
	// long (the fill's own rate guard watches those).
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: o.Timeout,
		TLSHandshakeTimeout:   o.Timeout,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	lookup := minio.BucketLookupDNS
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Transport:    tr,
		Region:       o.Region,
		BucketLookup: lookup,
		MaxRetries:   1, // the breaker and the upload queue retry
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	t := &Tier{
		o: o, client: client, core: minio.Core{Client: client},
		log:   o.Logger.With("component", "s3"),
		queue: make(chan job, o.QueueSize),
		stop:  make(chan struct{}),
		known: map[digest.Digest]struct{}{},
	}
	t.pending = pending{dir: o.PendingDir, log: t.log}
	if o.PendingDir != "" && o.Files != nil {
		if err := os.MkdirAll(o.PendingDir, 0o700); err != nil {
			return nil, fmt.Errorf("s3: upload queue dir: %w", err)
		}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for range o.Workers {
		t.workers.Add(1)
		go t.work()
	}
	t.resume()
	return t, nil
}

// resume queues the uploads a previous run left pending, for the blobs
// still in L1; the others are forgotten. Once the queue is full the rest
// stay remembered for the start after.
func (t *Tier) resume() {
	if t.o.Files == nil {
		return
	}
	n := 0
	for _, d := range t.pending.list() {
		f, _, err := t.o.Files.Open(d)
		if err != nil {
			t.pending.done(d) // evicted or damaged since: nothing to upload
			continue
		}
		f.Close()
		release := func() {}
		if t.o.Hold != nil {
			release = t.o.Hold(d)
		}
		if !t.enqueue(job{d: d, hold: release}) {
			break
		}
		n++
	}
	if n > 0 {
		t.log.Info("s3: resuming uploads queued before the last stop", "blobs", n)
	}
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Close stops the upload workers; what is still queued is not uploaded
// now (its holds are released) but stays remembered for the next start
// (pending.go).
func (t *Tier) Close() error {
	t.stopOnce.Do(func() { close(t.stop); t.cancel() })
	t.workers.Wait()
	for {
		select {
		case j := <-t.queue:
			t.stats.backlog.Add(-1)
			j.release()
		default:
			return nil
		}
	}
}

// blobKey is where d's content lives; d must be a validated sha256 digest.
func (t *Tier) blobKey(d digest.Digest) string {
	hex := d.Encoded()
	return t.o.Prefix + "blobs/sha256/" + hex[:2] + "/" + hex
}

// tagKey is where a tag's record lives.
func (t *Tier) tagKey(registry, repo, tag string) string {
	return t.o.Prefix + "tags/" + registry + "/" + repo + "/" + tag
}

// usableDigest: only validated sha256 digests name objects.
func usableDigest(d digest.Digest) bool {
	return d.Algorithm() == digest.SHA256 && d.Validate() == nil
}

// usable reports whether L2 may be asked now (the breaker is closed).
func (t *Tier) usable() bool {
	t.breakerMu.Lock()
	defer t.breakerMu.Unlock()
	return !t.o.Now().Before(t.openUntil)
}

// downFor is how long until L2 may be asked again (0: now).
func (t *Tier) downFor() time.Duration {
	t.breakerMu.Lock()
	defer t.breakerMu.Unlock()
	return t.openUntil.Sub(t.o.Now())
}

// failed records an answer of the store: an outage opens the breaker.
func (t *Tier) failed(what string, err error) {
	t.stats.errors.Add(1)
	if !isOutage(err) {
		t.log.Warn("s3 request failed", "what", what, "err", err)
		return
	}
	t.breakerMu.Lock()
	wasOpen := t.o.Now().Before(t.openUntil)
	t.openUntil = t.o.Now().Add(t.o.Backoff)
	t.breakerMu.Unlock()
	if !wasOpen {
		t.stats.breakerOpen.Add(1)
		t.log.Warn("s3 store unavailable: skipping it for a while", "what", what, "backoff_s", t.o.Backoff.Seconds(), "err", err)
	}
}

// answered records that the store answered: the breaker closes.
func (t *Tier) answered() {
	t.breakerMu.Lock()
	wasOpen := !t.openUntil.IsZero()
	t.openUntil = time.Time{}
	t.breakerMu.Unlock()
	if wasOpen {
		t.log.Info("s3 store answers again")
	}
}

// isNotFound: the object (or bucket) is absent.
func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

// isPreconditionFailed: If-None-Match found the object present.
func isPreconditionFailed(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// isOutage: the store could not answer (network, timeout, 5xx, throttled),
// as opposed to answering about the object or the request.
func isOutage(err error) bool {
	if err == nil {
		return false
	}
	r := minio.ToErrorResponse(err)
	if r.StatusCode == 0 && r.Code == "" {
		return true // no S3 answer at all: connection refused, timeout, cut
	}
	return r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests || r.Code == "SlowDown"
}

// remember notes that d is in L2.
func (t *Tier) remember(d digest.Digest) {
	t.knownMu.Lock()
	defer t.knownMu.Unlock()
	if len(t.known) >= maxKnown {
		clear(t.known)
	}
	t.known[d] = struct{}{}
}

func (t *Tier) isKnown(d digest.Digest) bool {
	t.knownMu.Lock()
	defer t.knownMu.Unlock()
	_, ok := t.known[d]
	return ok
}

func (t *Tier) forget(d digest.Digest) {
	t.knownMu.Lock()
	delete(t.known, d)
	t.knownMu.Unlock()
}

// smallContext bounds a request whose whole answer is read at once.
func (t *Tier) smallContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.o.Timeout)
}

// mediaTypeMeta is the metadata key holding an object's media type.
const mediaTypeMeta = "Media-Type"

func mediaTypeOf(info minio.ObjectInfo) string {
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, mediaTypeMeta) || strings.EqualFold(k, "X-Amz-Meta-"+mediaTypeMeta) {
			return v
		}
	}
	if mt := info.Metadata.Get("X-Amz-Meta-" + mediaTypeMeta); mt != "" {
		return mt
	}
	return info.ContentType
}
