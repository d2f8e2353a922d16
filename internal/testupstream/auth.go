package testupstream

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// grant is what a token allows: actions per repository, until expiry.
type grant struct {
	repos   map[string]map[string]bool // repo → action → granted
	expires time.Time
}

func (g *grant) allows(repo, action string) bool {
	a := g.repos[repo]
	return a[action] || a["*"]
}

// RevokeTokens forgets every issued token, so the next request with one is
// answered 401 (as if they had expired server-side).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]*grant{}
}

// authorize reports whether r may proceed, and answers the 401 itself if not.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	repo, _ := pathInfo(r.URL.Path)
	action := "pull"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		action = "push"
	}
	switch s.opts.mode {
	case authNone:
		return true
	case authBasic:
		u, p, ok := r.BasicAuth()
		if ok && u == s.opts.user && p == s.opts.pass {
			return true
		}
		s.challenge(w, `Basic realm="`+Service+`"`)
		return false
	}

	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok {
		s.mu.Lock()
		g := s.tokens[tok]
		if g != nil && s.opts.now().After(g.expires) {
			delete(s.tokens, tok)
			g = nil
		}
		s.mu.Unlock()
		if g != nil && (repo == "" || g.allows(repo, action)) {
			return true
		}
	}
	c := fmt.Sprintf(`Bearer realm=%q,service=%q`, s.realm(r), Service)
	if repo != "" {
		c += fmt.Sprintf(`,scope="repository:%s:%s"`, repo, action)
	}
	s.challenge(w, c)
	return false
}

func (s *Server) challenge(w http.ResponseWriter, header string) {
	s.mu.Lock()
	s.unauthorized++
	s.mu.Unlock()
	w.Header().Set("WWW-Authenticate", header)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

// serveToken is the token server: GET /token (Docker token auth) and POST
// /token (OAuth2 password and refresh_token grants).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.tokenReqs++
	s.mu.Unlock()
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	var scopes []string
	refresh := false
	switch r.Method {
	case http.MethodGet:
		if s.opts.user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != s.opts.user || p != s.opts.pass {
				tokenError(w, http.StatusUnauthorized, "incorrect username or password")
				return
			}
		}
		for _, sc := range r.URL.Query()["scope"] {
			scopes = append(scopes, strings.Fields(sc)...)
		}
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			tokenError(w, http.StatusBadRequest, err.Error())
			return
		}
		switch r.PostForm.Get("grant_type") {
		case "password":
			if s.opts.user != "" && (r.PostForm.Get("username") != s.opts.user || r.PostForm.Get("password") != s.opts.pass) {
				tokenError(w, http.StatusUnauthorized, "incorrect username or password")
				return
			}
			refresh = true
		case "refresh_token":
			// Refresh tokens are the issued token strings of password grants.
			s.mu.Lock()
			_, ok := s.refreshTokens[r.PostForm.Get("refresh_token")]
			s.mu.Unlock()
			if !ok {
				tokenError(w, http.StatusUnauthorized, "invalid refresh token")
				return
			}
		default:
			tokenError(w, http.StatusBadRequest, "unsupported grant_type")
			return
		}
		for _, sc := range r.PostForm["scope"] {
			scopes = append(scopes, strings.Fields(sc)...)
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}

	g := &grant{repos: map[string]map[string]bool{}, expires: s.opts.now().Add(s.opts.tokenExpiry)}
	for _, sc := range scopes {
		rest, ok := strings.CutPrefix(sc, "repository:")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ':')
		if i <= 0 {
			continue
		}
		repo := rest[:i]
		if g.repos[repo] == nil {
			g.repos[repo] = map[string]bool{}
		}
		for _, a := range strings.Split(rest[i+1:], ",") {
			g.repos[repo][a] = true
		}
	}
	tok := randomToken()
	resp := map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   max(1, int((s.opts.tokenExpiry+time.Second-1)/time.Second)),
		"issued_at":    s.opts.now().UTC().Format(time.RFC3339Nano),
	}
	s.mu.Lock()
	s.tokens[tok] = g
	if refresh {
		rt := randomToken()
		s.refreshTokens[rt] = struct{}{}
		resp["refresh_token"] = rt
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func tokenError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"details": msg})
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
