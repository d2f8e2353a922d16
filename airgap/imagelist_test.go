package airgap

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestParseImageList(t *testing.T) {
	d := "sha256:" + strings.Repeat("c", 64)
	tests := []struct {
		name, in string
		want     []string
		err      string
	}{
		{"empty", "", nil, ""},
		{"comments and blanks", "# header\n\n  \nalpine\n   # indented comment\n", []string{"docker.io/library/alpine:latest"}, ""},
		{"trailing comment", "alpine:3.20 # pinned for prod\n", []string{"docker.io/library/alpine:3.20"}, ""},
		{"digest", "ghcr.io/org/app@" + d + "\n", []string{"ghcr.io/org/app@" + d}, ""},
		{"tag and digest keeps the digest", "nginx:1.27@" + d, []string{"docker.io/library/nginx@" + d}, ""},
		{"other registries", "ghcr.io/org/app:v1\nregistry.corp:5000/team/tool:2\nquay.io/x/y", []string{
			"ghcr.io/org/app:v1", "registry.corp:5000/team/tool:2", "quay.io/x/y:latest"}, ""},
		{"duplicates once", "alpine\ndocker.io/library/alpine:latest\n", []string{"docker.io/library/alpine:latest"}, ""},
		{"crlf", "alpine:1\r\nbusybox\r\n", []string{"docker.io/library/alpine:1", "docker.io/library/busybox:latest"}, ""},
		{"bad line numbered", "alpine\nUPPER/case\n", []string{"docker.io/library/alpine:latest"}, "list.txt:2:"},
		{"two per line", "alpine busybox\n", nil, "list.txt:1: one reference per line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := ParseImageList(strings.NewReader(tt.in), "list.txt")
			if tt.err == "" && err != nil {
				t.Fatalf("err %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestChoosePlatforms(t *testing.T) {
	got, err := ChoosePlatforms("", false)
	if err != nil || got[0].String() != "linux/amd64" || got[len(got)-1].Architecture != runtime.GOARCH {
		t.Errorf("default platforms %v, %v", got, err)
	}
	if got, err := ChoosePlatforms("", true); got != nil || err != nil {
		t.Errorf("--all-platforms: %v, %v", got, err)
	}
	if _, err := ChoosePlatforms("linux", false); err == nil {
		t.Error("--platform linux accepted")
	}
}
