package relay

import (
	"bytes"
	"strings"

	"github.com/relay-mta/relay/relay/deliver"
)

// splitHandoff removes a hand-off field from the first line of msg and
// returns its token ("" when there is none). Only the first line counts:
// that is where our relays put it; a field elsewhere is just text.
func splitHandoff(msg []byte) (token string, rest []byte) {
	if len(msg) < len(deliver.HandoffField) || !bytes.EqualFold(msg[:len(deliver.HandoffField)], []byte(deliver.HandoffField)) {
		return "", msg
	}
	end := bytes.Index(msg, []byte("\r\n"))
	if end < 0 {
		return "", msg
	}
	token = strings.TrimSpace(string(msg[len(deliver.HandoffField):end]))
	if len(token) > 300 || strings.ContainsAny(token, "/\x00") {
		token = "" // not one of ours; drop the line all the same
	}
	return token, msg[end+2:]
}
