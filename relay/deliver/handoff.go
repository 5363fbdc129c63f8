package deliver

import "strings"

// HandoffField is the trace header that makes hand-off between our relays
// idempotent. The sending relay puts it first in the message, naming
// itself and its queue ID (both stable across retries); the receiving
// relay remembers (token, recipient) for the queue lifetime, in the same
// transaction that stores the message, and answers a re-send of the same
// pair with 250 without storing it again. That closes the window in which
// a connection breaks after the receiver committed but before the sender
// read the 250 (RFC 1047): exactly once between our relays, at least once
// with other MTAs, which ignore the field.
const HandoffField = "X-Relay-Handoff: "

// HandoffHeader is the field the relay hostname puts on message id. The
// hostname comes from the configuration; control characters are replaced
// all the same, so that it cannot end the line.
func HandoffHeader(hostname, id string) []byte {
	safe := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, hostname)
	return []byte(HandoffField + safe + " " + id + "\r\n")
}
