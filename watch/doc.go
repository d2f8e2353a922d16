// Package watch keeps a list of images warm on a schedule, before anyone
// pulls them: each interval every watched image is handed to a Warmer
// (which, in regmirror, revalidates the tag with a HEAD and, when it
// moved, fetches the new graph through the running server's own fill path
// and re-pins it). The scheduler owns only the when and the bookkeeping:
//
//   - a pass runs at start, then every interval plus a random jitter (up
//     to Jitter of the interval, default 10%) so that many mirrors started
//     together do not hit upstream at the same moment;
//   - images of one group go one after another, bounding the load;
//   - a Warmer that returns ErrDeferred (the registry is backing off after
//     an outage or a rate limit) leaves the image for the next pass without
//     counting a failure;
//   - the first pass, and any pass after a failed one, asks for the whole
//     graph even if the tag did not move, so a warm-up cut short is
//     completed;
//   - RunNow starts a pass at once and tells when it is done (the tests'
//     trigger, instead of waiting out an interval);
//   - Status reports, per image, the last run, the next run, the result and
//     the failures, for /metrics and the status page.
package watch
