package tagpolicy

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Rule is one [[tag_policy]] entry as configured.
type Rule struct {
	// Match is the "registry/repository:tag" glob (see the package doc).
	Match string
	// TTL, when set, replaces the global tag TTL; 0 revalidates every time.
	TTL *time.Duration
	// Immutable tags are never revalidated once cached.
	Immutable bool
	// StaleWhileRevalidate answers an expired tag from the cache at once
	// and revalidates it in the background.
	StaleWhileRevalidate bool
}

// Decision is how one tag is treated.
type Decision struct {
	// Rule is the index of the rule that matched, -1 for none.
	Rule int
	// Match is that rule's pattern ("" for none).
	Match                string
	TTL                  time.Duration
	Immutable            bool
	StaleWhileRevalidate bool
}

// Fresh reports whether a tag checked at checkedAt may be served at now
// without asking upstream.
func (d Decision) Fresh(checkedAt, now time.Time) bool {
	return d.Immutable || now.Sub(checkedAt) < d.TTL
}

// String says the decision in words, for logs and "policy explain".
func (d Decision) String() string {
	var what string
	switch {
	case d.Immutable:
		what = "immutable: never revalidated once cached"
	case d.TTL == 0:
		what = "ttl 0s: revalidated (HEAD) on every request; served stale only if upstream fails"
	default:
		what = fmt.Sprintf("ttl %s: served from the cache for %s, then revalidated (HEAD)", d.TTL, d.TTL)
	}
	if d.StaleWhileRevalidate {
		what += "; once expired, answered from the cache at once and revalidated in the background"
	}
	return what
}

// Policy is a compiled, ordered rule list. The zero value and nil have no
// rules (every tag gets the default TTL).
type Policy struct {
	rules      []compiled
	defaultTTL time.Duration
}

type compiled struct {
	Rule
	name []string // pattern components of registry/repository
	tag  string
}

// New checks and compiles rules; defaultTTL applies when none matches.
func New(rules []Rule, defaultTTL time.Duration) (*Policy, error) {
	p := &Policy{defaultTTL: defaultTTL}
	var errs []error
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("tag_policy[%d] %q: %w", i, r.Match, err))
			continue
		}
		p.rules = append(p.rules, c)
	}
	return p, errors.Join(errs...)
}

func compile(r Rule) (compiled, error) {
	if r.Match == "" {
		return compiled{}, errors.New("match is empty")
	}
	if r.Immutable && r.TTL != nil {
		return compiled{}, errors.New("immutable and ttl exclude each other")
	}
	if r.Immutable && r.StaleWhileRevalidate {
		return compiled{}, errors.New("an immutable tag is never revalidated: stale_while_revalidate makes no sense with it")
	}
	if r.TTL != nil && *r.TTL < 0 {
		return compiled{}, errors.New("ttl must not be negative")
	}
	name, tag := r.Match, "*"
	if i := strings.LastIndexByte(r.Match, ':'); i > strings.LastIndexByte(r.Match, '/') {
		name, tag = r.Match[:i], r.Match[i+1:]
	}
	c := compiled{Rule: r, name: strings.Split(name, "/"), tag: tag}
	if tag == "" || strings.Contains(tag, "/") {
		return c, errors.New("the tag part must be a non-empty glob without '/'")
	}
	if _, err := path.Match(tag, ""); err != nil {
		return c, fmt.Errorf("tag glob %q: %w", tag, err)
	}
	for _, comp := range c.name {
		if comp == "" {
			return c, errors.New("empty path component")
		}
		if comp == "**" {
			continue
		}
		if strings.Contains(comp, "**") {
			return c, fmt.Errorf("component %q: \"**\" must be a whole component", comp)
		}
		if _, err := path.Match(comp, ""); err != nil {
			return c, fmt.Errorf("component %q: %w", comp, err)
		}
	}
	return c, nil
}

// Lookup returns the decision for registry/repo:tag.
func (p *Policy) Lookup(registry, repo, tag string) Decision {
	if p == nil {
		return Decision{Rule: -1}
	}
	if len(p.rules) == 0 {
		return Decision{Rule: -1, TTL: p.defaultTTL}
	}
	var parts [16]string // every tag request asks: no allocation for common depths
	name := append(parts[:0], registry)
	for c := range strings.SplitSeq(repo, "/") {
		name = append(name, c)
	}
	for i, r := range p.rules {
		if !matchTag(r.tag, tag) || !matchName(r.name, name) {
			continue
		}
		d := Decision{Rule: i, Match: r.Match, TTL: p.defaultTTL, Immutable: r.Immutable, StaleWhileRevalidate: r.StaleWhileRevalidate}
		if r.TTL != nil {
			d.TTL = *r.TTL
		}
		return d
	}
	return Decision{Rule: -1, TTL: p.defaultTTL}
}

// Rules is how many rules the policy has.
func (p *Policy) Rules() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// DefaultTTL is the TTL of tags no rule matches.
func (p *Policy) DefaultTTL() time.Duration {
	if p == nil {
		return 0
	}
	return p.defaultTTL
}

func matchTag(pattern, tag string) bool {
	ok, _ := path.Match(pattern, tag) // patterns were checked in compile
	return ok
}

// matchName matches pattern components against name components; "**"
// matches any number of components.
func matchName(pattern, name []string) bool {
	for len(pattern) > 0 {
		if pattern[0] == "**" {
			rest := pattern[1:]
			for skip := 0; skip <= len(name); skip++ {
				if matchName(rest, name[skip:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pattern[0], name[0]); !ok {
			return false
		}
		pattern, name = pattern[1:], name[1:]
	}
	return len(name) == 0
}

// Check is how one rule fared against a tag, for "policy explain".
type Check struct {
	Rule   int
	Match  string
	NameOK bool // the registry/repository part matched
	TagOK  bool // the tag part matched
}

// Explain checks registry/repo:tag against every rule in order, up to and
// including the first that matches, and returns the decision.
func (p *Policy) Explain(registry, repo, tag string) ([]Check, Decision) {
	var checks []Check
	name := strings.Split(registry+"/"+repo, "/")
	if p != nil {
		for i, r := range p.rules {
			c := Check{Rule: i, Match: r.Match, NameOK: matchName(r.name, name), TagOK: matchTag(r.tag, tag)}
			checks = append(checks, c)
			if c.NameOK && c.TagOK {
				break
			}
		}
	}
	return checks, p.Lookup(registry, repo, tag)
}
