package proxy

// CacheHeader names the response header that says how the cache answered a
// manifest, blob, tag list or referrers request: an Outcome.
const CacheHeader = "X-Regmirror-Cache"

// Outcome is how the cache answered a request. It is sent in CacheHeader,
// logged under "cache", counted in regmirror_requests_total's cache label
// and reported by RevalidateTag. Clients of a running mirror (preload) read
// it back with ParseOutcome.
type Outcome string

// The outcomes, as they go on the wire.
const (
	// OutcomeNone: the request is not a cache answer (an error before any
	// cache or upstream work, a non-registry endpoint).
	OutcomeNone Outcome = ""
	// OutcomeHit: served from the cache (a tag younger than its TTL, a
	// digest, or a kept answer while offline).
	OutcomeHit Outcome = "hit"
	// OutcomeMiss: fetched from upstream now, and cached.
	OutcomeMiss Outcome = "miss"
	// OutcomeJoin: joined a fetch of the same content already in progress
	// (one upstream request served several clients).
	OutcomeJoin Outcome = "join"
	// OutcomeRevalidated: a cached tag upstream confirmed with a HEAD.
	OutcomeRevalidated Outcome = "revalidated"
	// OutcomeStale: served from the cache because upstream could not answer
	// (down, 5xx, rate limited, or its pull budget low).
	OutcomeStale Outcome = "stale"
	// OutcomeBypass: a blob streamed from upstream without caching (the
	// disk is full, or the blob cannot fit in the cache).
	OutcomeBypass Outcome = "bypass"
)

// ParseOutcome reads a CacheHeader value; ok is false for a value that is
// no outcome (an empty header included).
func ParseOutcome(s string) (o Outcome, ok bool) {
	switch o := Outcome(s); o {
	case OutcomeHit, OutcomeMiss, OutcomeJoin, OutcomeRevalidated, OutcomeStale, OutcomeBypass, OutcomeRedirect:
		return o, true
	}
	return OutcomeNone, false
}

// FromCache reports whether the answer came from what the mirror already
// held (hit, revalidated, stale) rather than from upstream now (miss, join,
// bypass).
func (o Outcome) FromCache() bool {
	return o == OutcomeHit || o == OutcomeRevalidated || o == OutcomeStale
}

// Joined returns OutcomeJoin when the answer was shared with a flight
// another request started, else o.
func (o Outcome) Joined(shared bool) Outcome {
	if shared {
		return OutcomeJoin
	}
	return o
}
