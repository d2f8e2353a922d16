package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: 404, MANIFEST_UNKNOWN, BLOB_UNKNOWN or NAME_UNKNOWN.
	ErrNotFound = errors.New("upstream: not found")
	// ErrUnauthorized: 401 even after a fresh token exchange, or the token
	// server refused the credentials.
	ErrUnauthorized = errors.New("upstream: unauthorized")
	// ErrDenied: 403 or DENIED.
	ErrDenied = errors.New("upstream: denied")
	// ErrRateLimited: 429 or TOOMANYREQUESTS; the error is a *RateLimitError.
	ErrRateLimited = errors.New("upstream: rate limited")
	// ErrUnavailable: connection errors, timeouts, stalled or cut bodies, 5xx
	// after retries, digest mismatches and other unexpected answers.
	ErrUnavailable = errors.New("upstream: unavailable")
	// ErrTooLarge: a manifest (or tag list) body over the size cap.
	ErrTooLarge = errors.New("upstream: manifest too large")
	// ErrInvalidManifest: a manifest body that is not a manifest of a known
	// media type (OCI image manifest or index, Docker schema 2 manifest or
	// manifest list), or does not match its Content-Type. It wraps
	// ErrUnavailable.
	ErrInvalidManifest = fmt.Errorf("%w: not a valid manifest", ErrUnavailable)
	// ErrInvalidName: a repository, reference or digest argument that is not
	// valid; no request was made.
	ErrInvalidName = errors.New("upstream: invalid name")
	// ErrBadRequest: a 4xx other than 401, 403, 404, 407, 408 and 429. Upstream
	// refused this request as such (a query it does not take, an API it
	// does not have): it says nothing about upstream's health, so it is no
	// outage and is not retried.
	ErrBadRequest = errors.New("upstream: request refused")
)

// ClientReason returns a short description of err that may be shown to a
// registry client: fixed text in the mirror's own words, with at most an
// upstream's status code, never upstream bodies, URLs or addresses (log
// err itself for those). ok is false when err is none of this package's
// errors.
func ClientReason(err error) (reason string, ok bool) {
	var rf *refusal
	var rl *RateLimitError
	var terr *transport.Error
	switch {
	case err == nil:
		return "", false
	case errors.As(err, &rf):
		return "upstream: " + rf.reason, true
	case errors.As(err, &rl):
		return rl.Error(), true
	case errors.Is(err, ErrInvalidManifest):
		return "upstream sent a body that is not a valid manifest; it was not cached", true
	case errors.Is(err, ErrRefused):
		return ErrRefused.Error(), true
	}
	for _, s := range []error{ErrNotFound, ErrUnauthorized, ErrDenied, ErrRateLimited, ErrUnavailable, ErrTooLarge, ErrInvalidName, ErrBadRequest} {
		if !errors.Is(err, s) {
			continue
		}
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return s.Error() + ": no answer in time", true
		case errors.As(err, &terr) && terr.StatusCode != 0:
			return fmt.Sprintf("%v: upstream answered %d %s", s, terr.StatusCode, http.StatusText(terr.StatusCode)), true
		}
		return s.Error(), true
	}
	return "", false
}

// RateLimitError wraps ErrRateLimited and carries the upstream's
// Retry-After (0 if it sent none).
type RateLimitError struct {
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v (retry after %v)", ErrRateLimited, e.RetryAfter)
	}
	return ErrRateLimited.Error()
}

// Unwrap returns ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// checkResponse returns nil if resp's status is one of ok, and otherwise a
// classified error, having read at most 64 KiB of the error body (the caller
// still closes resp.Body).
func (r *Registry) checkResponse(resp *http.Response, ok ...int) error {
	err := transport.CheckError(resp, ok...)
	if err == nil {
		return nil
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return fmt.Errorf("%w: reading error body: %w", ErrUnavailable, err)
	}
	sentinel := classifyStatus(terr)
	if sentinel == ErrRateLimited {
		sentinel = &RateLimitError{RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), r.opts.Now())}
	}
	return fmt.Errorf("%w: %w", sentinel, terr)
}

// classifyStatus maps a registry error to a sentinel: 429 and 5xx by
// status first, then the error codes, then the other statuses. Only what
// can be upstream's trouble (5xx, 407, 408, 429, UNAVAILABLE, an answer that is
// no HTTP error at all) is ErrUnavailable: a client's odd query that
// upstream answers 400 must not mark the registry out for everyone.
func classifyStatus(e *transport.Error) error {
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		return ErrRateLimited
	case e.StatusCode >= 500:
		return ErrUnavailable
	}
	for _, d := range e.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
			return ErrNotFound
		case transport.UnauthorizedErrorCode:
			return ErrUnauthorized
		case transport.DeniedErrorCode:
			return ErrDenied
		case transport.TooManyRequestsErrorCode:
			return ErrRateLimited
		case transport.UnavailableErrorCode:
			return ErrUnavailable
		}
	}
	switch e.StatusCode {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrDenied
	case http.StatusRequestTimeout, http.StatusProxyAuthRequired:
		// The way there timed out, or an egress proxy wants credentials:
		// trouble of the path to upstream, not of this request.
		return ErrUnavailable
	}
	if e.StatusCode >= 400 && e.StatusCode < 500 {
		return ErrBadRequest
	}
	return ErrUnavailable
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// classify turns an error from the token dance or a request into the
// package's errors: the caller's context error if it is done, errors already
// classified as they are, registry errors by status and code, and everything
// else (connection errors, timeouts, malformed answers) as ErrUnavailable.
func classify(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("upstream: %s: %w", what, cerr)
	}
	for _, s := range []error{ErrNotFound, ErrUnauthorized, ErrDenied, ErrRateLimited, ErrUnavailable, ErrTooLarge, ErrInvalidName, ErrBadRequest} {
		if errors.Is(err, s) {
			return err
		}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return fmt.Errorf("%w: %s: %w", classifyStatus(terr), what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// retryable reports whether err is worth another attempt: a connection
// level error (http.Client wraps those in *url.Error) or a 5xx.
func retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || isRefusal(err) || errors.Is(err, ErrInvalidManifest) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500
	}
	var uerr *url.Error
	return errors.As(err, &uerr)
}
