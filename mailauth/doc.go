// Package mailauth judges where a message comes from, for a receiving
// relay: SPF (RFC 7208) for the SMTP client's address against the MAIL
// FROM domain (or the HELO name when MAIL FROM is <>), DMARC (RFC 7489)
// for the author domain of the From field given the SPF and DKIM
// results, and the Authentication-Results field (RFC 8601) in which one
// relay records every verdict it reached, DKIM and ARC ones from package
// dkim included.
//
// It holds the evaluation only, on top of well-kept libraries:
//
//   - SPF: blitiri.com.ar/go/spf (chasquid's), which does every
//     mechanism, modifier and macro with the 10-lookup and 2-void-lookup
//     limits of RFC 7208 §4.6.4 and asks its lookups of a resolver we
//     give it ([CheckSPF]);
//   - DMARC: record discovery at _dmarc.<From domain>, then at its
//     organizational domain (golang.org/x/net/publicsuffix), records
//     parsed by github.com/emersion/go-msgauth/dmarc, identifier
//     alignment (relaxed or strict, adkim= and aspf=), and the policy
//     that applies (p=, sp= for a subdomain, pct= sampling)
//     ([CheckDMARC]);
//   - [Results]: one relay's verdicts as one Authentication-Results
//     field, and one line per method for people.
//
// Lookups go through a [Resolver] the caller gives (the relay's
// configured one, package relay/resolve), bounded by the caller's
// context; a lookup that fails for now is temperror, never fail. The
// package makes no policy decision: refusing a message on a verdict is
// the caller's (relay/auth.go).
package mailauth
