// Package status keeps the figures an operator looks at — hit ratios since
// start and over the last hour, per registry counts, the last pulls, the
// top repositories — and builds the status page's JSON model from them and
// from live readings the other packages supply (cache usage, downloads in
// progress, each registry's outage state and rate-limit budget). It also
// embeds the page itself (web/: one HTML file, its CSS and its JavaScript;
// no external assets, no build step), which polls the JSON.
//
// It knows nothing of HTTP servers: the proxy reports each finished request
// to a Recorder, serves the embedded files and encodes Model. Memory is
// bounded whatever the traffic: a ring of the last pulls, a per-minute
// window of 60 buckets, and at most Options.MaxRepos repositories counted
// (the least pulled are forgotten first).
package status
