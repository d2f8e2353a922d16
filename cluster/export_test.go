package cluster

import "time"

// SignForTest returns a peer Header value for method and uri under key,
// signed now.
func SignForTest(key []byte, method, uri string) string {
	return newSigner(key, 30*time.Second, time.Now).sign(method, uri)
}
