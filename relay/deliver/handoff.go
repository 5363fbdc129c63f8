package deliver

import "strings"

// HandoffField is the trace header that makes hand-off between our relays
// idempotent. The sending relay puts it first in the message:
//
//	X-Relay-Handoff: <origin> via <host> <queue ID>
//
// <host> <queue ID> (the hop token) names the sending relay and its copy,
// both stable across retries; <origin> is the hop token the message
// carried when it entered our relays (spool.Envelope.Handoff), and the
// field is just "<host> <queue ID>" when this relay is where it entered.
// The receiving relay remembers both tokens with each recipient for the
// queue lifetime, in the same transaction that stores the message, and
// answers a re-send under either with 250 without storing it again. The
// hop token closes the window in which a connection breaks after the
// receiver committed but before the sender read the 250 (RFC 1047); the
// origin catches the same message coming through another relay of a
// fleet, when the sender's retry after a lost 250 went to another MX
// (docs/design.md §7, §18). Exactly once between our relays, at least
// once with other MTAs, which ignore the field.
const HandoffField = "X-Relay-Handoff: "

// handoffVia separates the origin from the hop token.
const handoffVia = " via "

// HandoffHeader is the field the relay hostname puts on message id, whose
// origin token is origin ("" when the message entered our relays here).
// The hostname comes from the configuration; control characters are
// replaced all the same, so that it cannot end the line.
func HandoffHeader(hostname, id, origin string) []byte {
	hop := HandoffToken(hostname, id)
	if origin == "" || origin == hop {
		return []byte(HandoffField + hop + "\r\n")
	}
	return []byte(HandoffField + origin + handoffVia + hop + "\r\n")
}

// HandoffToken is the hop token of message id sent by hostname.
func HandoffToken(hostname, id string) string {
	safe := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' {
			return '?'
		}
		return r
	}, hostname)
	return safe + " " + id
}

// ParseHandoff splits the value of a hand-off field into its origin and
// hop tokens; a field without an origin (this version's for mail that
// entered at the sender, and every earlier version's) is its own origin.
func ParseHandoff(v string) (origin, hop string) {
	if i := strings.LastIndex(v, handoffVia); i >= 0 {
		return strings.TrimSpace(v[:i]), strings.TrimSpace(v[i+len(handoffVia):])
	}
	return v, v
}
