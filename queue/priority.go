package queue

import (
	"strings"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// priorityOf returns the MT-PRIORITY (RFC 6710) m was accepted with, -9..9;
// 0, the RFC's default, when it has none. The relay resets the priority
// of untrusted clients before the message is stored, so what is stored is
// what the scheduler honours.
func priorityOf(m *spool.Message) int8 {
	if !strings.Contains(m.MailParams, "MT-PRIORITY=") {
		// The common case, without a parse: stored parameters are in
		// the canonical form of MailParams.String.
		return 0
	}
	p, err := envelope.ParseMailParams(strings.TrimSpace(m.MailParams))
	if err != nil {
		return 0
	}
	return max(-9, min(9, p.Priority))
}
