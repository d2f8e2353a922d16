package upstream

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// keychainRefresh is how long credentials from a keychain are reused before
// it is asked again: credential helpers hand out short-lived tokens (ECR,
// GCR), and asking runs a process.
const keychainRefresh = 5 * time.Minute

// NewConfigKeychain returns a keychain that reads the Docker config.json at
// path, resolving a registry the way the Docker CLI does: its "auths" entry,
// or the credential helper its "credHelpers" entry or "credsStore" names
// (docker-credential-<helper>, found in $PATH). The file is read at every
// resolution, so edits take effect without a restart. A registry it has
// nothing for is anonymous.
func NewConfigKeychain(path string) authn.Keychain {
	return &configKeychain{path: path}
}

type configKeychain struct {
	path string
	mu   sync.Mutex // credential helpers are not assumed to be reentrant
}

var _ authn.ContextKeychain = (*configKeychain)(nil)

func (k *configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

func (k *configKeychain) ResolveContext(_ context.Context, target authn.Resource) (authn.Authenticator, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f, err := os.Open(k.path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", k.path, err)
	}
	// The keys the Docker CLI tries; Docker Hub is filed under its legacy
	// index URL.
	var cfg, empty types.AuthConfig
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err = cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("docker config %s: %s: %w", k.path, key, err)
		}
		cfg.ServerAddress = "" // set by GetAuthConfig; not a credential
		if cfg != empty {
			break
		}
	}
	if cfg == empty {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
	}), nil
}

// keychainAuth asks a keychain for a registry's credentials when they are
// first needed and again after keychainRefresh, not at startup: a helper
// that fails or a file that is missing then fails the upstream request
// (ErrUnauthorized), not the whole mirror.
type keychainAuth struct {
	kc     authn.Keychain
	target authn.Resource
	now    func() time.Time

	mu     sync.Mutex
	cached authn.Authenticator
	at     time.Time
}

func (a *keychainAuth) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

func (a *keychainAuth) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cached == nil || a.now().Sub(a.at) > keychainRefresh {
		auth, err := authn.Resolve(ctx, a.kc, a.target)
		if err != nil {
			return nil, fmt.Errorf("%w: credentials for %s: %w", ErrUnauthorized, a.target, err)
		}
		a.cached, a.at = auth, a.now()
	}
	return authn.Authorization(ctx, a.cached)
}
