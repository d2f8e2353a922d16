// Package cluster makes several regmirror nodes download a cold blob from
// upstream once for the whole cluster, not once per node.
//
// Ownership: the owner of a digest is chosen by rendezvous (highest random
// weight) hashing of the digest over the healthy nodes, this one included
// (rendezvous.go). Every node computes the same owner from the same view;
// when a node leaves, only the digests it owned move, each to the node
// that scored next for it.
//
// The peer source (source.go) decorates a registry's upstream. A fill on a
// node that does not own the digest asks the owner first: a blob GET on the
// owner's ordinary /v2/ endpoint, signed as a peer request. The owner runs
// its normal single fill (from its own cache, the S3 tier, or upstream) and
// streams it, holding back the last byte until its digest checked out; the
// asking node's fill reads that stream as it would read upstream, through
// its own hashing writer and hold-back. If the owner does not answer
// (connect error, 5xx, any refusal) the node marks it down and goes
// upstream itself: at worst one download per node, never an outage. A body
// cut mid-way fails the read, the fill resumes with a Range request, and
// the resume goes to the next owner (or upstream) since the cut one is
// marked down.
//
// A node asked by a peer for a digest fills that digest itself (Serving):
// it never forwards a peer's request again, and a forward of that digest it
// has in flight (the views disagreed: A thought B owned it, B thought A) is
// cut, so that its fill resumes from upstream instead of waiting in a loop.
//
// Peer protocol, version 1. A peer request carries one header,
//
//	X-Regmirror-Peer: v1 <unix seconds> <nonce: 32 hex digits> <signature: 64 hex digits>
//
// where the signature is HMAC-SHA256, under the shared key (the
// [cluster] secret_file), of
//
//	"regmirror-peer-v1\n" + method + "\n" + request URI (path and query) + "\n" + seconds + "\n" + nonce
//
// The receiver recomputes it and compares in constant time, refuses a
// timestamp more than MaxSkew (default 30s) from its clock, and refuses a
// nonce it has already accepted within that window (a replay). A verified
// peer request passes access control like the internal token. The Range
// header is not signed: a tampered range can only ask for other bytes of
// the same verified blob.
//
// Health: every PingInterval (default 2s) each peer is sent a signed GET of
// /_regmirror/peer (the proxy answers 200 when the signature checks out and
// the node is ready, as /readyz would say; 401 or 503 otherwise). A peer
// counts only once it answered a ping; an error talking to it (a refused
// connection, a 5xx, a cut body) marks it down at once, and the next ping
// that succeeds brings it back.
//
// Metrics come from Stats: peer requests served, forwarded, fallbacks and
// rejections, and each peer's health.
package cluster
