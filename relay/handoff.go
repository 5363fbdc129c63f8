package relay

import (
	"bytes"
	"strings"

	"github.com/relay-mta/relay/relay/deliver"
)

// splitHandoff removes a hand-off field from the first line of msg and
// returns its value ("" when there is none). Only the first line counts:
// that is where our relays put it; a field elsewhere is just text.
func splitHandoff(msg []byte) (value string, rest []byte) {
	if len(msg) < len(deliver.HandoffField) || !bytes.EqualFold(msg[:len(deliver.HandoffField)], []byte(deliver.HandoffField)) {
		return "", msg
	}
	end := bytes.Index(msg, []byte("\r\n"))
	if end < 0 {
		return "", msg
	}
	value = strings.TrimSpace(string(msg[len(deliver.HandoffField):end]))
	if len(value) > 600 || strings.ContainsAny(value, "/\x00") {
		value = "" // not one of ours; drop the line all the same
	}
	return value, msg[end+2:]
}

// handoffTokens turns the value of a hand-off field from a trusted relay
// into the hop token this copy is remembered under and the origin the
// message keeps (spool.Envelope.Handoff, design §7). header is the
// message's header section without the field.
//
// A message that already passed through this relay (one of our Received
// fields, or our own name in the hop token: it went out and came back
// through a filter or a forwarder) is a new passage, not a re-send: its
// hop token is kept, but it starts a new origin here, or it would be
// taken for the copy it once was.
func handoffTokens(value, hostname string, header []byte) (hop, origin string) {
	if value == "" {
		return "", ""
	}
	origin, hop = deliver.ParseHandoff(value)
	if hop == "" {
		return "", ""
	}
	if origin == "" || strings.HasPrefix(hop, hostname+" ") || passedHere(header, hostname) {
		origin = ""
	}
	return hop, origin
}

// passedHere reports whether header has a Received field this relay
// wrote (receivedHeader: "by <hostname> (relay)").
func passedHere(header []byte, hostname string) bool {
	return bytes.Contains(header, []byte("\tby "+hostname+" (relay) with "))
}
