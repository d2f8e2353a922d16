package cluster

import "hash/fnv"

// Owner returns the node of nodes that owns key by rendezvous hashing: the
// one with the highest score for key, ties broken by the smaller name. It
// returns "" for no nodes. The result depends only on key and the set of
// nodes, not on their order, so every node with the same view agrees, and
// removing a node moves only the keys it owned.
func Owner(key string, nodes []string) string {
	var best string
	var bestScore uint64
	for _, n := range nodes {
		s := score(n, key)
		if best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// score is node's weight for key: FNV-1a over node, a separator and key,
// then a 64-bit finalizer (splitmix64's) so that nearby inputs spread over
// the whole range.
func score(node, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
