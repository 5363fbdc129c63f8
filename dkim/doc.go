// Package dkim signs and verifies DomainKeys Identified Mail (RFC 6376) for
// the relay, on top of github.com/emersion/go-msgauth.
//
// It holds what the relay needs around the bare algorithm:
//
//   - keys: PEM (PKCS#8) ed25519 (RFC 8463) and RSA of at least 2048 bits,
//     loaded, generated and written ([LoadKey], [GenerateKey], [WriteKey]);
//   - the DNS record that publishes a key ([TXTRecord], [TXTValue]);
//   - signing with relaxed/relaxed canonicalization over the header fields
//     RFC 6376 §5.4.1 recommends, From signed once more than it occurs so
//     that a second From cannot be added ([Signer]);
//   - verification of every signature of a message, with keys taken from a
//     static table first (DNS-less networks, tests) and from DNS TXT
//     records otherwise; a temporary DNS failure is temperror, never fail
//     ([Verifier]);
//   - the Authentication-Results header field that records the verdicts
//     (RFC 8601), and removal of forged ones ([AuthenticationResults],
//     [RemoveAuthResults]);
//   - ARC (RFC 8617): validation of a message's Authenticated Received
//     Chain ([Verifier.VerifyARC]) and sealing, the set an intermediary
//     adds ([Sealer]), on canonicalization code of its own (arccanon.go)
//     that the tests check against go-msgauth and dkimpy.
//
// Messages are byte slices as they travel on the wire: header section, empty
// line, body, lines ending in CRLF; or, to bound memory, the header section
// and a function that returns a new reader of the body. The package does
// no I/O except key files and the TXT lookups of a Verifier.
package dkim
