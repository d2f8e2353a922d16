package admin

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	tests := []struct{ in, want string }{
		{"alpine", "docker.io/library/alpine:latest"},
		{"alpine:3.20", "docker.io/library/alpine:3.20"},
		{"docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20"},
		{"index.docker.io/org/app", "docker.io/org/app:latest"},
		{"ghcr.io/org/app:v1", "ghcr.io/org/app:v1"},
		{"registry.corp:5000/team/app@" + d, "registry.corp:5000/team/app@" + d},
		{"alpine:3.20@" + d, "docker.io/library/alpine@" + d},
		{"127.0.0.1:5000/x/y:z", "127.0.0.1:5000/x/y:z"},
	}
	for _, tt := range tests {
		r, err := ParseRef(tt.in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", tt.in, err)
			continue
		}
		if r.String() != tt.want {
			t.Errorf("ParseRef(%q) = %s, want %s", tt.in, r, tt.want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a@sha256:zz", "a:b:c", "a@md5:" + strings.Repeat("a", 32)} {
		if _, err := ParseRef(bad); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("ParseRef(%q) = %v, want ErrInvalidRef", bad, err)
		}
	}
}
