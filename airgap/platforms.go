package airgap

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ChoosePlatforms reads a --platform list ("linux/amd64,linux/arm64/v8");
// an empty one means linux/amd64 and the host's own platform (what a
// site usually runs, without the cost of every platform). all means every
// platform, returned as nil.
func ChoosePlatforms(list string, all bool) ([]v1.Platform, error) {
	if all {
		if list != "" {
			return nil, errors.New("--platform and --all-platforms exclude each other")
		}
		return nil, nil
	}
	var specs []string
	if list == "" {
		specs = []string{"linux/amd64", "linux/" + runtime.GOARCH}
	} else {
		specs = strings.Split(list, ",")
	}
	var out []v1.Platform
	seen := map[string]bool{}
	for _, s := range specs {
		s = strings.TrimSpace(s)
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/arm64/v8", s)
		}
		if !seen[p.String()] {
			seen[p.String()] = true
			out = append(out, *p)
		}
	}
	return out, nil
}

// platformWanted: same OS and architecture, and the variant when asked.
func platformWanted(plats []v1.Platform, p *v1.Platform) bool {
	if plats == nil {
		return true
	}
	if p == nil {
		return false
	}
	for _, w := range plats {
		if w.OS == p.OS && w.Architecture == p.Architecture && (w.Variant == "" || w.Variant == p.Variant) {
			return true
		}
	}
	return false
}

func platformsString(plats []v1.Platform) string {
	s := make([]string, len(plats))
	for i, p := range plats {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
