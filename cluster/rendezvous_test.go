package cluster

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("sha256:%064x", i*7919)
	}
	return out
}

// TestOwnerStable: the owner depends on the set of nodes only, not on
// their order, and is the same on every call.
func TestOwnerStable(t *testing.T) {
	nodes := []string{"http://10.0.0.1:5000", "http://10.0.0.2:5000", "http://10.0.0.3:5000"}
	rev := slices.Clone(nodes)
	slices.Reverse(rev)
	for _, k := range keys(2000) {
		a, b := Owner(k, nodes), Owner(k, rev)
		if a != b || a != Owner(k, nodes) {
			t.Fatalf("%s: owner %s, %s with the nodes reversed", k, a, b)
		}
	}
	if Owner("x", nil) != "" {
		t.Fatal("no nodes: want no owner")
	}
}

// TestOwnerSpreads: three nodes each own about a third of the keys.
func TestOwnerSpreads(t *testing.T) {
	nodes := []string{"http://a:5000", "http://b:5000", "http://c:5000"}
	count := map[string]int{}
	ks := keys(30000)
	for _, k := range ks {
		count[Owner(k, nodes)]++
	}
	for _, n := range nodes {
		if share := float64(count[n]) / float64(len(ks)); math.Abs(share-1.0/3) > 0.03 {
			t.Errorf("%s owns %.3f of the keys, want about 1/3 (%v)", n, share, count)
		}
	}
}

// TestOwnerMinimalMovement: when a node leaves, only the keys it owned
// move (each to some remaining node); when it comes back, exactly those
// keys return to it.
func TestOwnerMinimalMovement(t *testing.T) {
	all := []string{"http://a:5000", "http://b:5000", "http://c:5000", "http://d:5000"}
	without := []string{"http://a:5000", "http://b:5000", "http://d:5000"}
	moved := 0
	ks := keys(20000)
	for _, k := range ks {
		before, after := Owner(k, all), Owner(k, without)
		if before != "http://c:5000" && before != after {
			t.Fatalf("%s moved from %s to %s though %s stayed", k, before, after, before)
		}
		if before == "http://c:5000" {
			moved++
			if after == "http://c:5000" {
				t.Fatalf("%s still owned by the node that left", k)
			}
		}
	}
	if share := float64(moved) / float64(len(ks)); math.Abs(share-0.25) > 0.03 {
		t.Errorf("%.3f of the keys moved when one of four nodes left, want about 1/4", share)
	}
}
