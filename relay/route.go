package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/config"
)

// Router decides the next hop of each recipient from the configuration
// alone (docs/design.md §7, §8): our names at the head of a source route are
// removed, a remaining route is followed, stripped or refused as
// source_routes says, local domains go to mailboxes, and everything else
// goes where the [[route]] table says, or to the domain's MX hosts. It does
// no I/O, so the scheduler can call it inline; MX records are looked up by
// the Deliverer when a session is opened.
//
// A Router only reads its tables after NewRouter returns, so it is safe for
// concurrent use. It reflects the configuration it was built from; a
// reloaded configuration needs a new Router.
type Router struct {
	cfg *config.Config
	// exact maps a domain (lower case, no trailing dot) or a canonical
	// address literal ("[192.0.2.1]") to its route.
	exact map[string]config.Route
	// wild maps parent to the route of "*.parent".
	wild map[string]config.Route
	// star is the route of "*", if any.
	star *config.Route
	// secrets holds what each route's sending needs from files (its
	// password, its CA roots), by the route's domain; see LoadRouteFiles.
	secrets map[string]routeFiles
	// UserExists, when set, says whether a local mailbox exists; mail for
	// a local user that does not (a DSN to a mistyped sender, say) fails
	// with 550 5.1.1 instead of filling a mailbox nobody can read.
	// "postmaster" always exists.
	UserExists func(name string) bool
}

var _ queue.Router = (*Router)(nil)

// NewRouter indexes cfg's route table. cfg must not change while the Router
// is in use.
func NewRouter(cfg *config.Config) *Router {
	r := &Router{
		cfg:   cfg,
		exact: make(map[string]config.Route),
		wild:  make(map[string]config.Route),
	}
	for _, rt := range cfg.Routes {
		// config.Load already normalises domains; doing it again costs
		// nothing and keeps a hand-built Config (tests, embedding) correct.
		d := normRouteDomain(rt.Domain)
		rt.Domain = d // rt is a copy; Source names the entry in this form
		switch {
		case d == "*":
			if r.star == nil {
				r.star = &rt
			}
		case strings.HasPrefix(d, "*."):
			if _, dup := r.wild[d[2:]]; !dup {
				r.wild[d[2:]] = rt
			}
		default:
			if lit, _, ok := canonicalLiteral(d); ok {
				d, rt.Domain = lit, lit
			}
			// The first entry wins, as it would for a reader of the file
			// (config refuses duplicates anyway).
			if _, dup := r.exact[d]; !dup {
				r.exact[d] = rt
			}
		}
	}
	return r
}

// Route implements queue.Router. to is a forward path in wire form, with
// its source route if it has one; rcptOut is the path to give the next hop
// (our own names removed from the route, or the route removed when
// source_routes = "strip"). A *queue.PermanentError means the address can
// never be routed (bad syntax, a refused source route or address literal).
func (r *Router) Route(to string) (hop queue.Hop, rcptOut string, err error) {
	p, err := envelope.ParseForwardPath(to, true)
	if err != nil {
		return queue.Hop{}, "", &queue.PermanentError{Code: 553, Err: fmt.Errorf("route %s: %w", to, err)}
	}
	if p.IsPostmaster() {
		// RFC 5321 §4.5.1: the domainless postmaster is always ours.
		return queue.Hop{Key: "local", Local: true, Mailbox: "postmaster", Source: "postmaster"}, p.String(), nil
	}

	p = ownHopsDone(r.cfg, p)
	if len(p.Route) > 0 {
		switch r.cfg.SourceRoutes {
		case config.SourceRoutesStrip:
			// RFC 5321 §3.6.1 lets a relay deliver to the mailbox directly.
			p = p.WithoutRoute()
		case config.SourceRoutesReject:
			return queue.Hop{}, "", &queue.PermanentError{Code: 550, Err: fmt.Errorf("route %s: source routes are not accepted (source_routes = reject)", to)}
		default: // follow, and the zero value of a hand-built Config
			hop, err := r.hostHop(p.Route[0], true)
			if err != nil {
				return queue.Hop{}, "", routeError(to, err)
			}
			hop.Source = "source route, " + hop.Source
			return hop, p.String(), nil
		}
	}

	if r.isLocal(p.Domain) {
		user := strings.ToLower(p.Local)
		if user != "postmaster" && r.UserExists != nil && !r.UserExists(user) {
			return queue.Hop{}, "", &queue.PermanentError{Code: 550, Err: fmt.Errorf("5.1.1 <%s>: no such user here", p.Mailbox())}
		}
		return queue.Hop{
			Key:     "local",
			Local:   true,
			Mailbox: user,
			Source:  "local domain " + normRouteDomain(p.Domain),
		}, p.String(), nil
	}
	hop, err = r.hostHop(p.Domain, false)
	if err != nil {
		return queue.Hop{}, "", routeError(to, err)
	}
	return hop, p.String(), nil
}

// routeError adds the recipient to err, keeping a *queue.PermanentError at
// the top so that callers which test its type directly see it too.
func routeError(to string, err error) error {
	var pe *queue.PermanentError
	if errors.As(err, &pe) {
		return &queue.PermanentError{Code: pe.Code, Err: fmt.Errorf("route %s: %w", to, pe.Err)}
	}
	return fmt.Errorf("route %s: %w", to, err)
}

// isLocal reports whether mail for domain d is delivered to mailboxes here:
// a local domain, or an address literal naming this relay (RFC 5321
// §4.1.3 literals are how a sender addresses a host directly; sending mail
// for our own address back out would only loop until max_hops).
func (r *Router) isLocal(d string) bool {
	if strings.HasPrefix(d, "[") {
		return r.cfg.IsOurName(d)
	}
	return r.cfg.IsLocalDomain(d)
}

// ownHopsDone removes from p what this relay has already done by
// receiving it (docs/design.md §8): a host named twice in a row counts once, our
// own names at the head of the route are hops made, and with percent_hack
// "user%D@us" becomes <@us:user@D>, also a hop made (one '%' per name of
// ours; the next relay peels the next one). The SMTP policy and the Router
// both decide on the result, so what is accepted is what is routed.
func ownHopsDone(cfg *config.Config, p envelope.Path) envelope.Path {
	p = p.CollapseRoute()
	for len(p.Route) > 0 && cfg.IsOurName(p.Route[0]) {
		p = p.StripFirstHop()
	}
	for cfg.PercentHack && len(p.Route) == 0 && (cfg.IsOurName(p.Domain) || cfg.IsLocalDomain(p.Domain)) {
		q, ok := p.PercentHack()
		if !ok {
			break
		}
		p = q.StripFirstHop() // the hop PercentHack added is the domain we just recognised as ours
	}
	return p
}

// hostHop resolves a domain or a source-route host to a remote hop: the
// route table (exact, longest "*.parent", "*"), else the host's MX records.
// An address literal goes to that address unless the table names it
// exactly; inRoute says it came from a source route, where literals must
// be allowed by route_literals.
func (r *Router) hostHop(host string, inRoute bool) (queue.Hop, error) {
	if strings.HasPrefix(host, "[") {
		return r.literalHop(host, inRoute)
	}
	d := normRouteDomain(host)
	if rt, ok := r.exact[d]; ok {
		return r.routeHop(rt, "route "+rt.Domain), nil
	}
	// Longest parent first: for a.b.c.test try b.c.test, c.test, test.
	for parent := d; ; {
		i := strings.IndexByte(parent, '.')
		if i < 0 {
			break
		}
		parent = parent[i+1:]
		if rt, ok := r.wild[parent]; ok {
			return r.routeHop(rt, "route "+rt.Domain), nil
		}
	}
	if r.star != nil {
		return r.routeHop(*r.star, "route *"), nil
	}
	port := orPort(r.cfg.DNS.MXPort)
	return queue.Hop{
		Key:    mxKey(d, port, config.TLSOpportunistic),
		MX:     d,
		Port:   port,
		TLS:    string(config.TLSOpportunistic),
		Source: "mx " + d,
	}, nil
}

// literalHop routes an address literal: an exact [[route]] entry for it, or
// the address itself on port 25. General literals ("[x400:...]") name no
// address we could connect to.
func (r *Router) literalHop(host string, inRoute bool) (queue.Hop, error) {
	if inRoute && !r.cfg.RouteLiterals {
		return queue.Hop{}, &queue.PermanentError{Code: 550, Err: fmt.Errorf("address literal %s in a source route is not allowed (route_literals = false)", host)}
	}
	lit, ip, ok := canonicalLiteral(host)
	if !ok {
		return queue.Hop{}, &queue.PermanentError{Code: 550, Err: fmt.Errorf("address literal %s names no IP address", host)}
	}
	if rt, ok := r.exact[lit]; ok {
		return r.routeHop(rt, "route "+lit), nil
	}
	addrs := []string{net.JoinHostPort(ip.String(), "25")}
	return queue.Hop{
		Key:    smtpKey(addrs, config.TLSOpportunistic),
		Addrs:  addrs,
		TLS:    string(config.TLSOpportunistic),
		Source: "address literal " + lit,
	}, nil
}

// routeHop turns a [[route]] entry into a hop.
func (r *Router) routeHop(rt config.Route, source string) queue.Hop {
	tlsMode := rt.TLS
	if tlsMode == "" {
		tlsMode = config.TLSOpportunistic
	}
	hosts := rt.Hosts
	if len(hosts) == 0 { // a hand-built Route
		hosts = []config.RouteHost{{Host: rt.Host, Port: rt.Port, MX: rt.MX}}
	}
	var hop queue.Hop
	if len(hosts) == 1 && hosts[0].MX {
		host := normRouteDomain(hosts[0].Host)
		port := orPort(hosts[0].Port)
		hop = queue.Hop{Key: mxKey(host, port, tlsMode), MX: host, Port: port}
	} else {
		// Several next hops are tried in order within one attempt: an
		// address, or a bare name whose MX hosts Dial looks up.
		addrs := make([]string, len(hosts))
		for i, h := range hosts {
			if h.MX {
				addrs[i] = normRouteDomain(h.Host)
			} else {
				addrs[i] = net.JoinHostPort(strings.ToLower(h.Host), strconv.Itoa(orPort(h.Port)))
			}
		}
		hop = queue.Hop{Key: smtpKey(addrs, tlsMode), Addrs: addrs}
	}
	hop.TLS, hop.Source = string(tlsMode), source
	hop.ServerName, hop.SourceIP, hop.EHLO = rt.TLSServerName, rt.SourceIP, rt.EHLOName
	hop.Shape = queue.Shape{
		Rate:          rt.MaxMessageRate,
		Concurrency:   rt.PerHopConcurrency,
		PerConnection: rt.MaxMessagesPerConnection,
	}
	if f, ok := r.secrets[rt.Domain]; ok {
		hop.Auth, hop.RootCAs = f.auth, f.roots
	}
	// What makes a session different is part of the lane's name, so that
	// two routes to one smarthost with two logins never share a session.
	if rt.AuthUser != "" {
		hop.Key += ";auth=" + rt.AuthUser
	}
	if hop.ServerName != "" {
		hop.Key += ";name=" + hop.ServerName
	}
	if hop.SourceIP.IsValid() {
		hop.Key += ";source=" + hop.SourceIP.String()
	}
	if hop.EHLO != "" {
		hop.Key += ";ehlo=" + hop.EHLO
	}
	return hop
}

func orPort(p int) int {
	if p == 0 {
		return 25
	}
	return p
}

// smtpKey and mxKey name lanes by destination, so that every domain routed
// to the same place shares its sessions and its concurrency limit. A TLS
// policy other than the default is part of the key: a session opened for a
// tls = "none" route must never carry mail whose route says "require".
func smtpKey(addrs []string, tlsMode config.TLSMode) string {
	return "smtp:" + strings.Join(addrs, ",") + tlsSuffix(tlsMode)
}

func mxKey(name string, port int, tlsMode config.TLSMode) string {
	return "mx:" + name + ":" + strconv.Itoa(port) + tlsSuffix(tlsMode)
}

func tlsSuffix(m config.TLSMode) string {
	if m == config.TLSOpportunistic || m == "" {
		return ""
	}
	return ";tls=" + string(m)
}

// normDomain lower-cases d and removes a trailing dot, the form of every
// domain in config.Config.
func normRouteDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(d), ".")
}

// canonicalLiteral returns the canonical form of an IPv4 or IPv6 address
// literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"), so that one address
// written two ways finds one route, and the address itself. ok is false
// for general literals ("[x400:...]") and malformed input.
func canonicalLiteral(s string) (lit string, addr netip.Addr, ok bool) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return "", netip.Addr{}, false
	}
	inner := s[1 : len(s)-1]
	if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
		a, err := netip.ParseAddr(inner[5:])
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return "", netip.Addr{}, false
		}
		return "[IPv6:" + a.String() + "]", a, true
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is4() {
		return "", netip.Addr{}, false
	}
	return "[" + a.String() + "]", a, true
}
