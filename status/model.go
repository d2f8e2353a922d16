package status

import "time"

// Model is the status page's data, as GET /_regmirror/status answers it.
type Model struct {
	Version     string    `json:"version"`
	GeneratedAt time.Time `json:"generated_at"`
	StartedAt   time.Time `json:"started_at"`
	// Offline is set when the mirror never asks upstream.
	Offline bool `json:"offline"`

	Cache      CacheFigures `json:"cache"`
	SinceStart Ratios       `json:"since_start"`
	LastHour   Ratios       `json:"last_hour"`

	Registries  []Registry `json:"registries"`
	Downloads   []Download `json:"downloads"`
	TopByBytes  []Repo     `json:"top_by_bytes"`
	TopByPulls  []Repo     `json:"top_by_pulls"`
	RecentPulls []Pull     `json:"recent_pulls"`
	// Watch is the watch list ([[watch]] images kept warm), if any.
	Watch []Watched `json:"watch"`
}

// CacheFigures is the cache's size against its budget and the disk.
type CacheFigures struct {
	UsedBytes   int64 `json:"used_bytes"`
	BudgetBytes int64 `json:"budget_bytes"` // 0: no budget
	FreeBytes   int64 `json:"free_bytes"`   // on the data dir's filesystem; -1 unknown
	MinFree     int64 `json:"min_free_bytes"`
	Blobs       int64 `json:"blobs"`
	PinnedBytes int64 `json:"pinned_bytes"`
	PinnedBlobs int64 `json:"pinned_blobs"`
}

// Ratios are request and byte counts over some period. A hit is an answer
// from the cache (hit, revalidated, stale); a miss came from upstream
// (miss, join, bypass). Ratios are 0 when nothing was asked.
type Ratios struct {
	Requests      int64   `json:"requests"`
	Hits          int64   `json:"hits"`
	Misses        int64   `json:"misses"`
	HitRatio      float64 `json:"hit_ratio"`
	BytesServed   int64   `json:"bytes_served"`
	BytesFromHits int64   `json:"bytes_from_cache"`
	ByteHitRatio  float64 `json:"byte_hit_ratio"`
	// UpstreamBytes were downloaded from upstream registries. SavedBytes
	// were served from the cache: what upstream did not have to send again
	// (the same as BytesFromHits, named for the page).
	UpstreamBytes int64 `json:"upstream_bytes"`
	SavedBytes    int64 `json:"saved_bytes"`
}

// Registry is one configured upstream as the page shows it.
type Registry struct {
	Name             string  `json:"name"`
	Requests         int64   `json:"requests"`
	Hits             int64   `json:"hits"`
	HitRatio         float64 `json:"hit_ratio"`
	UpstreamRequests int64   `json:"upstream_requests"`
	UpstreamErrors   int64   `json:"upstream_errors"`
	UpstreamBytes    int64   `json:"upstream_bytes"`
	State
}

// State is a registry's live condition, read from the proxy and upstream.
type State struct {
	Name string `json:"-"`
	// Out is set while the registry is marked out after failing to answer:
	// cached tags are served stale until OutUntil.
	Out       bool      `json:"out"`
	OutUntil  time.Time `json:"out_until,omitzero"`
	OutReason string    `json:"out_reason,omitempty"`
	// RateLimit is the pull budget the registry last announced (Docker Hub).
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Sources are the registry's upstream mirrors and its own URL, in the
	// order they are tried, when it has mirrors.
	Sources []Source `json:"sources,omitempty"`
}

// Source is one place a registry's content is fetched from.
type Source struct {
	URL    string `json:"url"`
	Mirror bool   `json:"mirror"`
	// OutUntil is set while the source is skipped after failing.
	OutUntil time.Time `json:"out_until,omitzero"`
}

// Watched is one image of the watch list. Errors are left out: their text
// may be an upstream's.
type Watched struct {
	Image    string    `json:"image"`
	Registry string    `json:"registry"`
	Repo     string    `json:"repository"`
	Result   string    `json:"result"` // ok, moved, warmed, deferred, failed; "" before the first run
	Digest   string    `json:"digest,omitempty"`
	LastRun  time.Time `json:"last_run,omitzero"`
	NextRun  time.Time `json:"next_run,omitzero"`
	Failures int64     `json:"failures"`
	Moves    int64     `json:"moves"`
}

// RateLimit is a registry's announced pull budget.
type RateLimit struct {
	Limit         int       `json:"limit"`
	Remaining     int       `json:"remaining"`
	WindowSeconds int64     `json:"window_seconds"`
	ReadAt        time.Time `json:"read_at"`
	// Reserve is the budget the mirror keeps back; Shielded is set while
	// Remaining is below it: expired tags are then served stale instead of
	// revalidated, and only misses spend the budget.
	Reserve  int  `json:"reserve"`
	Shielded bool `json:"shielded"`
}

// Download is a blob download in progress.
type Download struct {
	Digest    string    `json:"digest"`
	Registry  string    `json:"registry"`
	Repo      string    `json:"repository"`
	Done      int64     `json:"bytes_done"`
	Size      int64     `json:"size"` // -1 unknown
	Rate      float64   `json:"bytes_per_second"`
	Followers int       `json:"clients"`
	StartedAt time.Time `json:"started_at"`
}

// Repo is one repository's counts.
type Repo struct {
	Registry string `json:"registry"`
	Repo     string `json:"repository"`
	Pulls    int64  `json:"pulls"`
	Bytes    int64  `json:"bytes"`
}

// Pull is one finished manifest request.
type Pull struct {
	Time     time.Time `json:"time"`
	Client   string    `json:"client"`
	Registry string    `json:"registry"`
	Repo     string    `json:"repository"`
	Ref      string    `json:"ref"`
	// Outcome is how the cache answered (hit, miss, join, revalidated,
	// stale, bypass), or "not found" or "error".
	Outcome string `json:"outcome"`
	Status  int    `json:"status"`
}
