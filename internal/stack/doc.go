// Package stack wires the cache, its eviction and the management
// operations once, in one direction: the cache tells eviction what it
// holds, eviction deletes through the cache, and pins (kept by the cache's
// index, read at open) reach eviction from admin. Serve and every command
// that opens the data dir itself get the same Stack from [Open].
package stack
