package depcheck

import "testing"

func TestAllows(t *testing.T) {
	rule := []string{"github.com/a/b", "github.com/c/..."}
	for path, want := range map[string]bool{
		"github.com/a/b": true, "github.com/a/b/sub": false, "github.com/a/bc": false,
		"github.com/c": true, "github.com/c/d/e": true, "github.com/cd": false,
	} {
		if got := allows(rule, path); got != want {
			t.Errorf("allows(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestOwnImports(t *testing.T) { Allow(t) }
