// Package access decides who a request is and whether a rule lets that
// identity pull a registry/repository through the mirror.
//
// Identity, in this order:
//   - HTTP Basic credentials that match an entry of the htpasswd file
//     (bcrypt only, as `htpasswd -B` and registry:2 write them) name the
//     user. The file is re-read when its modification time or size changes,
//     checked at most once a second when a credential is verified.
//   - A client certificate that the TLS layer verified against the
//     configured client CA names the user by its Common Name.
//     "regmirror" and "regmirror-peer", the identities the proxy gives its
//     own and its cluster peers' requests, are nobody's: an htpasswd entry
//     or rule naming them is a configuration error, a certificate with
//     either CN identifies no one.
//   - A client whose address is in a trusted network is the user
//     "anonymous".
//   - Anyone else is unauthenticated (ErrUnauthenticated), including a
//     client that sent credentials that do not match: the Docker daemon
//     sends its Docker Hub login to mirrors, so a non-matching credential
//     never fails a client that a certificate or a trusted network
//     identifies; it just does not count.
//
// Verifying a password runs bcrypt every time it is not in a short-lived
// cache of verified and refused credentials (keyed by an HMAC of user and
// password under a per-process random key, cleared when the htpasswd file
// changes; refusals are kept apart, so that a flood of wrong ones cannot
// push out the accepted ones): an unknown user is compared against a dummy
// hash, so a wrong user name costs the same time as a wrong password.
// Parallel requests with one credential share its verification (unless it
// was refused for its address's throttle: another address then verifies
// for itself). A refusal is kept for the failure window. An address
// without failed logins verifies up to sixteen at once (users behind a NAT
// logging in together); once it has failed, five at once (those in flight
// count as failures to be); past five failures, one at a time, each waiting
// longer. A request that finds no turn free waits for one, and is refused
// (ErrRateLimited) only if none comes back within the longest wait plus
// five seconds. At most GOMAXPROCS-1 (at least one) comparisons run at
// once, whatever the addresses.
//
// Rules are ordered: the first rule whose users include the identity
// decides. Within it a matching deny glob wins over a matching allow glob;
// when neither matches, or no rule names the identity, the pull is denied
// (ErrDenied). The user "*" in a rule means any identified user except
// "anonymous". Globs match "registry/repository" as the proxy resolved it
// ("docker.io/library/alpine"): "*" stays within one path component, "**"
// crosses them (see Glob).
//
// An optional per-client rate (requests per second, keyed by user name, or
// by address for "anonymous") answers ErrRateLimited above it. Failed
// password verifications spend the same rate from a budget of their own per
// address, and a verification needs one left: an address cannot guess
// faster than the rate, while users logging in from one address and
// anonymous pulls do not use it up. A request without credentials is not
// counted: its ErrUnauthenticated is cheap, and Docker sends one first.
//
// The package knows nothing of HTTP servers: the proxy hands it the client's
// address, Authorization header and verified certificate name (Client) and
// maps the sentinel errors to registry wire codes.
package access
