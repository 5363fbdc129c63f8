package envelope

import "strings"

// Source routes and the percent hack are explicit operations: the parsers
// never apply them, so policy (docs/design.md §8: follow, strip or reject;
// percent_hack on or off) stays with the caller.

// PercentHack interprets "user%D@B" as the source route "<@B:user@D>": the
// rightmost '%' in the local part becomes the new domain separator and the
// old domain becomes the single route host ahead of any existing route. It
// reports false (and returns p unchanged) when the local part holds no '%'
// or the part after the rightmost '%' is not a valid domain.
// "a%c%d@b" -> "<@b:a%c@d>" (one '%' peeled at a time).
//
// It also reports false when there is nothing before the '%' ("%d@b"), when
// p has no domain (<>, <postmaster>), and when the result would break a
// limit (MaxRouteLen hosts, MaxPathLen octets: the path grows by one ':'),
// so that what it returns always parses again.
func (p Path) PercentHack() (Path, bool) {
	if p.Domain == "" {
		return p, false
	}
	i := strings.LastIndexByte(p.Local, '%')
	if i <= 0 {
		return p, false
	}
	user, dom := p.Local[:i], p.Local[i+1:]
	// The new domain came out of the local part, so it is non-ASCII only if
	// p already was: accepting UTF-8 here never adds an SMTPUTF8 need.
	if checkDomain(dom, "domain") != nil || len(p.Route)+1 > MaxRouteLen {
		return p, false
	}
	route := make([]string, 0, len(p.Route)+1)
	route = append(route, p.Domain)
	route = append(route, p.Route...)
	q := Path{Route: route, Local: user, Domain: dom}
	if localWireLen(user) > MaxLocalLen || q.wireLenExact() > MaxPathLen {
		return p, false
	}
	return q, true
}

// NextHop returns the first route host, or the domain when there is no route.
func (p Path) NextHop() string {
	if len(p.Route) > 0 {
		return p.Route[0]
	}
	return p.Domain
}

// StripFirstHop returns p with its first route host removed (p unchanged when
// there is no route).
//
// The result has its own Route slice (nil when the route is now empty), so
// changing it never changes p.
func (p Path) StripFirstHop() Path {
	if len(p.Route) == 0 {
		return p
	}
	if len(p.Route) == 1 {
		p.Route = nil
		return p
	}
	p.Route = append([]string(nil), p.Route[1:]...)
	return p
}

// WithoutRoute returns p with the route removed (RFC 5321 advises servers to
// strip routes and deliver to the mailbox).
func (p Path) WithoutRoute() Path {
	p.Route = nil
	return p
}

// localWireLen is the length of local as writeLocal formats it.
func localWireLen(local string) int {
	if isDotString(local) {
		return len(local)
	}
	n := len(local) + 2
	for i := 0; i < len(local); i++ {
		if local[i] == '"' || local[i] == '\\' {
			n++
		}
	}
	return n
}

// wireLenExact is len(p.String()) for a path with a domain.
func (p Path) wireLenExact() int {
	n := 2 + localWireLen(p.Local) + 1 + len(p.Domain)
	for _, h := range p.Route {
		n += 1 + len(h) + 1 // "@h" and its ',' or ':'
	}
	return n
}

// CollapseRoute returns p with a host named twice in a row in its route
// named once (compared case-insensitively): a route cannot make a relay
// send to itself (RFC 5321 §3.6 leaves such loops to the relays).
func (p Path) CollapseRoute() Path {
	for i := 1; i < len(p.Route); i++ {
		if strings.EqualFold(p.Route[i], p.Route[i-1]) {
			route := make([]string, 0, len(p.Route)-1)
			route = append(route, p.Route[:i]...)
			for _, h := range p.Route[i:] {
				if !strings.EqualFold(h, route[len(route)-1]) {
					route = append(route, h)
				}
			}
			p.Route = route
			return p
		}
	}
	return p
}
