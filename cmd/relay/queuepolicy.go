package main

import (
	"regexp"

	"github.com/relay-mta/relay/relay/admin/api"
)

// The TLS policy of a recipient's delivery (DANE, MTA-STS, none), as the
// deliverer writes it: "relay=ADDR (policy P) ..." in a delivery event,
// "451 4.7.x P policy of DOMAIN: why" in a deferral.
var (
	appliedRE  = regexp.MustCompile(`\(policy ([A-Za-z -]+)\)`)
	deferredRE = regexp.MustCompile(`^4\d\d 4\.7\.\d+ (DANE|MTA-STS enforce|MTA-STS testing) policy of (\S+):`)
)

// tlsPolicy says which TLS policy applied to recipient r's last attempt,
// "" when no event or reply says (a route, or no attempt yet).
func tlsPolicy(m *api.Message, r api.Recipient) string {
	if p := deferredRE.FindStringSubmatch(r.LastReply); p != nil {
		return p[1] + " of " + p[2] + ": not met, deferred (see last reply)"
	}
	for i := len(m.Events) - 1; i >= 0; i-- {
		e := m.Events[i]
		if e.Recipient != r.Address {
			continue
		}
		if p := appliedRE.FindStringSubmatch(e.Text); p != nil {
			return p[1]
		}
		if e.Kind == "deferred" || e.Kind == "delivered" || e.Kind == "failed" {
			return "" // the last attempt did not reach an MX host
		}
	}
	return ""
}
