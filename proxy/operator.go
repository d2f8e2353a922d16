package proxy

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/access"
	"github.com/regmirror/regmirror/status"
	"github.com/regmirror/regmirror/upstream"
)

// Operator views: what a person or an orchestrator asks of the mirror
// itself rather than of a registry — the status page at / with its JSON at
// /_regmirror/status, /readyz, and /v2/_catalog. They are answered before
// routing; the management API under /_regmirror/ stays loopback only.

// OperatorOptions configures the operator views. Zero values take the
// defaults named.
type OperatorOptions struct {
	// Version is shown on the page and in regmirror_build_info.
	Version string
	// Cache reports the cache's usage for the page; nil shows none.
	Cache func() status.CacheFigures
	// Watch lists the watch list's images for the page; nil: none.
	Watch func() []status.Watched
	// Ready reports the readiness checks /readyz answers with; nil: always
	// ready.
	Ready func() []Check
	// PullPolicy, when set, decides what a client may see: the page and the
	// catalog show only repositories it may pull. Nil: whoever reaches the
	// mirror may pull everything, and sees everything.
	PullPolicy PullPolicy
	// RateLimitReserve is the part of a registry's announced pull budget
	// (Docker Hub's RateLimit headers) kept back: below it, expired tags
	// are served stale instead of revalidated; misses still go upstream.
	// RateLimitReservePulls, when > 0, is a number of pulls; otherwise
	// RateLimitReserveFraction is a fraction of the limit (default 0.1;
	// negative: no shield).
	RateLimitReservePulls    int
	RateLimitReserveFraction float64
}

// PullPolicy is what the operator views need from access control.
type PullPolicy interface {
	// MayPull reports whether the request's client may pull registry/repo;
	// with repo "", whether it may pull anything from registry.
	MayPull(ctx *fasthttp.RequestCtx, registry, repo string) bool
}

// challenger is the optional PullPolicy side that tells a client that has
// not said who it is (answered 401 with a Basic challenge) from one that
// may not pull (403).
type challenger interface {
	Unidentified(ctx *fasthttp.RequestCtx) bool
}

// Check is one readiness condition.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// sourcesUpstream is the optional Upstream side of a registry with
// mirrors (upstream.Failover).
type sourcesUpstream interface {
	Sources() []upstream.SourceState
}

// repositoryLister is the optional Store side the catalog needs.
type repositoryLister interface {
	Repositories(fn func(registry, repo string) error) error
}

const (
	statusPath  = adminPrefix + "status"
	catalogPath = "/v2/_catalog"
	// defaultCatalogPage and maxCatalogPage bound a catalog page, as
	// distribution does.
	defaultCatalogPage = 100
	maxCatalogPage     = 1000
)

func (s *Server) initOperator() {
	o := &s.opts.Operator
	if o.RateLimitReserveFraction == 0 {
		o.RateLimitReserveFraction = 0.1
	}
	s.status = status.New(status.Options{
		Version: o.Version,
		Offline: s.opts.Offline,
		Now:     s.opts.Now,
		Sources: status.Sources{
			Cache:      o.Cache,
			Registries: s.registryStates,
			Downloads:  s.downloads,
			Watch:      o.Watch,
		},
	})
	if s.opts.Metrics != nil {
		s.opts.Metrics.MustRegister(newRegistryCollector(s))
	}
	// Counters that may stay at zero for long are exported from the start,
	// so that rate() and dashboards see a 0, not nothing.
	for name := range s.plain {
		s.metrics.staleServed.WithLabelValues(name)
		s.metrics.upstreamBytes.WithLabelValues(name)
	}
}

// recordExchange counts a finished request in the metrics and the status
// figures.
func (s *Server) recordExchange(e *exchange, now time.Time, bytes int64) {
	s.metrics.request(e.endpoint, e.outcome, e.registry, e.status, bytes, now.Sub(e.start))
	s.status.Request(status.Event{
		Time: s.opts.Now(), Client: e.client, Registry: e.registry, Repo: e.repo, Ref: e.ref,
		Endpoint: e.endpoint, Outcome: string(e.outcome), FromCache: e.outcome.FromCache(), Status: e.status, Bytes: bytes,
	})
}

// operatorView is the handler of an operator view at path, or nil.
func (s *Server) operatorView(path string) handlerFunc {
	switch path {
	case "/readyz":
		return s.serveReady
	case catalogPath:
		return s.serveCatalog
	case "/", "/index.html", adminPrefix + "status.css", adminPrefix + "status.js", statusPath:
		return s.serveStatus
	}
	return nil
}

// serveStatus answers the status page, its assets and its JSON, for whoever
// may pull something.
func (s *Server) serveStatus(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	ex.endpoint = "status"
	if !ctx.IsGet() && !ctx.IsHead() {
		return reply{}, fmt.Errorf("%w: %s %s", errUnsupportedMethod, ex.method, ex.path)
	}
	if !s.maySeeStatus(ctx) {
		if c, ok := s.opts.Operator.PullPolicy.(challenger); ok && c.Unidentified(ctx) {
			// Answered with a Basic challenge: a browser asks for the login.
			return reply{}, withChallenge(fmt.Errorf("%w: log in to see the status page", access.ErrUnauthenticated))
		}
		return reply{}, fmt.Errorf("%w: the status page is for clients that may pull", errForbidden)
	}
	// The page loads nothing from elsewhere and runs no inline code.
	ctx.Response.Header.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if ex.path == statusPath {
		m := s.status.Model(func(registry, repo string) bool { return s.mayPull(ctx, registry, repo) })
		body, err := json.Marshal(m)
		if err != nil {
			return reply{}, err
		}
		return bodyReply("application/json", body), nil
	}
	name := strings.TrimPrefix(ex.path, adminPrefix)
	if name == "/" {
		name = "index.html"
	}
	name = strings.TrimPrefix(name, "/")
	a, ok := status.Page(name)
	if !ok {
		return reply{}, fmt.Errorf("%w: %s", errUnknownEndpoint, ex.path)
	}
	return bodyReply(a.ContentType, a.Body), nil
}

func (s *Server) mayPull(ctx *fasthttp.RequestCtx, registry, repo string) bool {
	p := s.opts.Operator.PullPolicy
	return p == nil || p.MayPull(ctx, registry, repo)
}

// maySeeStatus: the page is for whoever may pull something.
func (s *Server) maySeeStatus(ctx *fasthttp.RequestCtx) bool {
	for _, name := range s.registryNames() {
		if s.mayPull(ctx, name, "") {
			return true
		}
	}
	return false
}

func (s *Server) registryNames() []string {
	names := make([]string, 0, len(s.plain))
	for name := range s.plain {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// readyBody is /readyz's answer.
type readyBody struct {
	Ready  bool    `json:"ready"`
	Checks []Check `json:"checks"`
}

func (s *Server) serveReady(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	ex.endpoint = "health"
	r := bodyReply("application/json", nil)
	r.body, r.status = readyAnswer(s.opts.Operator.Ready)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return r, nil
}

// readyAnswer is /readyz's body and status (200 or 503) for the checks
// ready reports (nil: none, ready).
func readyAnswer(ready func() []Check) ([]byte, int) {
	b := readyBody{Ready: true, Checks: []Check{}}
	if ready != nil {
		b.Checks = ready()
	}
	for _, c := range b.Checks {
		b.Ready = b.Ready && c.OK
	}
	status := http.StatusOK
	if !b.Ready {
		status = http.StatusServiceUnavailable
	}
	body, _ := json.Marshal(b)
	return body, status
}

// serveCatalog answers GET /v2/_catalog: the repositories the cache holds
// (a tag or a blob seen there), sorted, paginated like distribution (n,
// last, a Link header to the next page), and only those the client may
// pull. With ?ns= or a Host alias naming a registry, that registry's
// repositories by their bare names; otherwise the default registry's bare
// and every other registry's prefixed with its name, the way the path
// prefix addressing pulls them.
func (s *Server) serveCatalog(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	ex.endpoint = "catalog"
	ctx.Response.Header.Set("Docker-Distribution-API-Version", "registry/2.0")
	if !ctx.IsGet() && !ctx.IsHead() {
		return reply{}, fmt.Errorf("%w: %s %s", errUnsupportedMethod, ex.method, ex.path)
	}
	q, err := s.catalogQuery(ctx)
	if err != nil {
		return reply{}, err
	}
	names, err := s.catalogNames(ctx, q)
	if err != nil {
		return reply{}, err
	}
	// n=0 asks for an empty page, which has no last name to go on from.
	more := len(names) > q.n
	if more {
		names = names[:q.n]
	}
	if more && q.n > 0 {
		next := url.Values{"n": {strconv.Itoa(q.n)}, "last": {names[q.n-1]}}
		ctx.Response.Header.Set("Link", nextPageLink(catalogPath, ctx.QueryArgs(), next))
	}
	if names == nil {
		names = []string{}
	}
	body, _ := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{names})
	return bodyReply("application/json", body), nil
}

// notARegistry is a catalog page's registry that matches none.
const notARegistry = "\x00"

// catalogPage is what a catalog request asks for.
type catalogPage struct {
	n    int    // page size
	last string // the page starts after this name
	only string // one registry's repositories, by bare name; "": all
}

// pageSize reads a list request's n: ok is false when there is none, and
// anything but a non-negative integer is errPaginationInvalid.
func pageSize(args *fasthttp.Args) (n int, ok bool, err error) {
	v := args.Peek("n")
	if len(v) == 0 {
		return 0, false, nil
	}
	n, err = strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%w: n=%q", errPaginationInvalid, v)
	}
	return n, true, nil
}

// catalogQuery reads a catalog request's n, last, and ?ns= or Host alias.
func (s *Server) catalogQuery(ctx *fasthttp.RequestCtx) (catalogPage, error) {
	args := ctx.QueryArgs()
	q := catalogPage{n: defaultCatalogPage, last: string(args.Peek("last"))}
	if n, ok, err := pageSize(args); err != nil {
		return q, err
	} else if ok {
		q.n = min(n, maxCatalogPage)
	}
	ns, host := string(args.Peek("ns")), s.routes.hostOf(ctx)
	if _, aliased := s.routes.alias(host); ns != "" || aliased {
		up, err := s.routes.registry(ns, "", host)
		if err != nil && !s.maySeeStatus(ctx) {
			// Who may pull nothing gets the empty page it would get for
			// a configured registry: which ones are is not its to learn.
			q.only = notARegistry
			return q, nil
		} else if err != nil {
			return q, err
		}
		q.only = up.Name()
	}
	return q, nil
}

// catalogNames lists, sorted, the cached repositories of configured
// registries the client may pull that come after q.last: the default
// registry's (or q.only's) by bare name, the others' prefixed with the
// registry.
func (s *Server) catalogNames(ctx *fasthttp.RequestCtx, q catalogPage) ([]string, error) {
	lister, ok := s.store.(repositoryLister)
	if !ok {
		return nil, nil
	}
	var names []string
	err := lister.Repositories(func(registry, repo string) error {
		if _, configured := s.plain[registry]; !configured || (q.only != "" && registry != q.only) || !s.mayPull(ctx, registry, repo) {
			return nil
		}
		name := repo
		if q.only == "" && registry != s.opts.DefaultRegistry {
			name = registry + "/" + repo
		}
		if q.last == "" || name > q.last {
			names = append(names, name)
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// downloads lists the fills in progress for the page.
func (s *Server) downloads() []status.Download {
	s.fills.mu.Lock()
	fills := make([]*fill, 0, len(s.fills.fills))
	for _, f := range s.fills.fills {
		fills = append(fills, f)
	}
	s.fills.mu.Unlock()
	now := s.opts.Now()
	out := make([]status.Download, 0, len(fills))
	for _, f := range fills {
		f.mu.Lock()
		d := status.Download{
			Digest: f.digest.String(), Registry: f.request.registry, Repo: f.request.repo,
			Done: f.written, Size: f.size, Followers: int(f.followers.Load()), StartedAt: f.begun,
		}
		f.mu.Unlock()
		if secs := now.Sub(f.begun).Seconds(); secs > 0 {
			d.Rate = math.Round(float64(d.Done) / secs)
		}
		out = append(out, d)
	}
	return out
}

// registryStates reads each registry's outage mark and pull budget.
func (s *Server) registryStates() []status.State {
	now := s.opts.Now()
	var out []status.State
	for _, name := range s.registryNames() {
		st := status.State{Name: name}
		st.OutUntil, st.OutReason = s.health.state(name, now)
		st.Out = !st.OutUntil.IsZero()
		if su, ok := s.plain[name].(statsUpstream); ok {
			if us := su.Stats(); us.HasRateLimit {
				rl := us.RateLimit
				st.RateLimit = &status.RateLimit{
					Limit: rl.Limit, Remaining: rl.Remaining, WindowSeconds: int64(rl.Window / time.Second),
					ReadAt: rl.At, Reserve: s.reserve(rl.Limit), Shielded: s.shielded(name),
				}
			}
		}
		if su, ok := s.plain[name].(sourcesUpstream); ok {
			if srcs := su.Sources(); len(srcs) > 1 {
				for _, src := range srcs {
					st.Sources = append(st.Sources, status.Source{URL: src.URL, Mirror: src.Mirror, OutUntil: src.OutUntil})
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// The rate-limit shield. Docker Hub counts manifest GETs against a pull
// budget per window and says what is left in RateLimit-Remaining. When it
// falls below the reserve, revalidating an expired tag (which may end in a
// GET when the tag moved) is not worth the budget: the cached manifest is
// served stale, as during an outage, until the reading is older than its
// window or shows the budget back above the reserve. Misses still go
// upstream: they have nothing else to serve.

// defaultRateLimitWindow is assumed when a registry names no window.
const defaultRateLimitWindow = 6 * time.Hour

// shieldState remembers which registries are shielded, to log changes.
type shieldState struct {
	mu sync.Mutex
	on map[string]bool
}

// reserve is the budget kept back of limit.
func (s *Server) reserve(limit int) int {
	o := s.opts.Operator
	if o.RateLimitReservePulls > 0 {
		return o.RateLimitReservePulls
	}
	if o.RateLimitReserveFraction < 0 {
		return 0
	}
	return int(math.Ceil(o.RateLimitReserveFraction * float64(limit)))
}

// shielded reports whether registry's remaining pull budget is below the
// reserve now; a change is logged.
func (s *Server) shielded(registry string) bool {
	su, ok := s.plain[registry].(statsUpstream)
	if !ok {
		return false
	}
	st := su.Stats()
	on := false
	if st.HasRateLimit {
		rl := st.RateLimit
		window := rl.Window
		if window <= 0 {
			window = defaultRateLimitWindow
		}
		on = time.Since(rl.At) < window && rl.Remaining < s.reserve(rl.Limit)
	}
	s.shield.mu.Lock()
	was := s.shield.on[registry]
	if was != on {
		if s.shield.on == nil {
			s.shield.on = map[string]bool{}
		}
		s.shield.on[registry] = on
	}
	s.shield.mu.Unlock()
	if on && !was {
		s.log.Warn("rate-limit shield up: pull budget below the reserve; expired tags are served stale until it recovers",
			"registry", registry, "remaining", st.RateLimit.Remaining, "limit", st.RateLimit.Limit, "reserve", s.reserve(st.RateLimit.Limit))
	} else if was && !on {
		s.log.Info("rate-limit shield down: tags are revalidated again", "registry", registry)
	}
	return on
}

// outageReason says in the mirror's own words why a registry was marked
// out; upstream's text never reaches a client.
func outageReason(err error) string {
	switch resultLabel(err) {
	case "rate_limited":
		return "rate limited (429)"
	case "unavailable":
		return "unavailable (down, 5xx or cut off)"
	}
	if isUpstreamOutage(err) {
		return "timed out"
	}
	return "failed to answer"
}
