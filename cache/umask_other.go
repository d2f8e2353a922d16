//go:build !unix

package cache

// restrictUmask: no umask outside Unix.
func restrictUmask() {}
