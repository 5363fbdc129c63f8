package relay

import (
	"bytes"
	"strings"
)

// handoffField is the trace header that makes hand-off between our relays
// idempotent. The sending relay puts it first in the message, naming
// itself and its queue ID (both stable across retries); the receiving
// relay remembers (token, recipient) for the queue lifetime, in the same
// transaction that stores the message, and answers a re-send of the same
// pair with 250 without storing it again. That closes the window in which
// a connection breaks after the receiver committed but before the sender
// read the 250 (RFC 1047): exactly once between our relays, at least once
// with other MTAs, which ignore the field.
const handoffField = "X-Relay-Handoff: "

// handoffHeader is the field the relay hostname puts on message id.
func handoffHeader(hostname, id string) []byte {
	return []byte(handoffField + headerSafe(hostname) + " " + id + "\r\n")
}

// splitHandoff removes a hand-off field from the first line of msg and
// returns its token ("" when there is none). Only the first line counts:
// that is where our relays put it; a field elsewhere is just text.
func splitHandoff(msg []byte) (token string, rest []byte) {
	if len(msg) < len(handoffField) || !bytes.EqualFold(msg[:len(handoffField)], []byte(handoffField)) {
		return "", msg
	}
	end := bytes.Index(msg, []byte("\r\n"))
	if end < 0 {
		return "", msg
	}
	token = strings.TrimSpace(string(msg[len(handoffField):end]))
	if len(token) > 300 || strings.ContainsAny(token, "/\x00") {
		token = "" // not one of ours; drop the line all the same
	}
	return token, msg[end+2:]
}
