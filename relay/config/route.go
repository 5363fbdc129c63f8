package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// routes checks the [[route]] entries.
func (v *validator) routes(c *Config, fc *fileConfig) {
	seen := map[string]int{}
	for i, r := range fc.Route {
		at := func(key string) []string { return p("route", indexPart(i), key) }
		var rt Route

		d := normDomain(r.Domain)
		switch {
		case r.Domain == "":
			v.errorf(at("domain"), "missing")
		case d == "*":
		case strings.HasPrefix(d, "*.") && validDomain(d[2:]):
		case validDomain(d):
		default:
			v.errorf(at("domain"), "invalid domain %q (want a domain, *.domain or *)", r.Domain)
		}
		rt.Domain = d
		if j, dup := seen[d]; dup && d != "" {
			v.errorf(at("domain"), "%q already has a route (route[%d])", d, j)
		}
		seen[d] = i

		v.routeTo(&rt, at("to"), r.To)

		rt.AuthUser = strings.TrimSpace(r.AuthUser)
		rt.AuthPasswordFile = strings.TrimSpace(r.AuthPasswordFile)
		switch {
		case rt.AuthUser != "" && rt.AuthPasswordFile == "":
			v.errorf(at("auth_user"), "is set but auth_password_file is not; both are needed")
		case rt.AuthUser == "" && rt.AuthPasswordFile != "":
			v.errorf(at("auth_password_file"), "is set but auth_user is not; both are needed")
		case !oneCommandWord(rt.AuthUser):
			v.errorf(at("auth_user"), "invalid user name %q", r.AuthUser)
		}

		switch m := TLSMode(strings.TrimSpace(r.TLS)); m {
		case "":
			rt.TLS = TLSOpportunistic
			if rt.AuthUser != "" {
				// A password never goes out in the clear, nor to a
				// server whose certificate did not verify.
				rt.TLS = TLSRequire
				if rt.Port == 465 {
					rt.TLS = TLSImplicit
				}
			}
		case TLSOpportunistic, TLSNone:
			rt.TLS = m
			if rt.AuthUser != "" {
				v.errorf(at("tls"), "%q with auth_user: a password is only sent over verified TLS (want require or implicit)", r.TLS)
			}
		case TLSRequire, TLSImplicit:
			rt.TLS = m
		default:
			v.errorf(at("tls"), "invalid value %q (want opportunistic, require, implicit or none)", r.TLS)
		}

		rt.TLSCAFile = strings.TrimSpace(r.TLSCAFile)
		rt.TLSServerName = normDomain(r.TLSServerName)
		if rt.TLSServerName != "" && !validHost(rt.TLSServerName) {
			v.errorf(at("tls_server_name"), "invalid name %q", r.TLSServerName)
		}
		if (rt.TLSCAFile != "" || rt.TLSServerName != "") && rt.TLS != TLSRequire && rt.TLS != TLSImplicit {
			key := "tls_ca_file"
			if rt.TLSCAFile == "" {
				key = "tls_server_name"
			}
			v.errorf(at(key), "only applies to tls = require or implicit (the route says %s)", rt.TLS)
		}
		if s := strings.TrimSpace(r.SourceIP); s != "" {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				v.errorf(at("source_ip"), "invalid IP address %q", r.SourceIP)
			}
			rt.SourceIP = a.Unmap()
		}
		if r.EHLOName != "" {
			rt.EHLOName = normDomain(r.EHLOName)
			if _, ok := normLiteral(rt.EHLOName); !ok && !validDomain(rt.EHLOName) {
				v.errorf(at("ehlo_name"), "invalid name %q (want a domain or an address literal)", r.EHLOName)
			}
		}
		rt.MaxMessageRate = v.rate(at("max_message_rate"), r.MaxMessageRate)
		if r.PerHopConc != 0 {
			rt.PerHopConcurrency = v.count(at("per_hop_concurrency"), r.PerHopConc, 1)
		}
		if r.MaxMsgsPerConn != 0 {
			rt.MaxMessagesPerConnection = v.count(at("max_messages_per_connection"), r.MaxMsgsPerConn, 1)
		}
		c.Routes = append(c.Routes, rt)
	}
}

// routeTo checks a route's to: one next hop, or an array of them tried in
// order.
func (v *validator) routeTo(rt *Route, path []string, raw any) {
	var list []string
	switch x := raw.(type) {
	case nil:
	case string:
		if s := strings.TrimSpace(x); s != "" {
			list = []string{s}
		}
	case []any:
		for i, e := range x {
			s, ok := e.(string)
			if !ok || strings.TrimSpace(s) == "" {
				v.errorf(elem(path, i), "invalid next hop %v (want host:port, [ip]:port or a name)", e)
				continue
			}
			list = append(list, strings.TrimSpace(s))
		}
	default:
		v.errorf(path, "invalid value %v (want a next hop or an array of them)", raw)
		return
	}
	if len(list) == 0 {
		v.errorf(path, "missing")
		return
	}
	rt.To = strings.Join(list, ", ")
	for i, s := range list {
		host, port, mx, err := parseRouteTo(s)
		if err != nil {
			if len(list) > 1 {
				v.errorf(elem(path, i), "%v", err)
			} else {
				v.errorf(path, "%v", err)
			}
			continue
		}
		rt.Hosts = append(rt.Hosts, RouteHost{Host: host, Port: port, MX: mx})
	}
	if len(rt.Hosts) > 0 {
		rt.Host, rt.Port, rt.MX = rt.Hosts[0].Host, rt.Hosts[0].Port, rt.Hosts[0].MX
	}
}

// rate parses a message rate, "" for none.
func (v *validator) rate(path []string, s string) Rate {
	if strings.TrimSpace(s) == "" {
		return Rate{}
	}
	r, err := ParseRate(s)
	if err != nil {
		v.errorf(path, "%v", err)
	}
	return r
}

// ParseRate parses a message rate: a count, a slash and a unit, s, m or h
// ("100/s", "600/m", "10000/h"), or a duration ("20/5s").
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	num, unit, ok := strings.Cut(t, "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if !ok || err != nil || n < 1 {
		return Rate{}, fmt.Errorf("invalid rate %q (want a count per s, m or h, like \"100/s\")", s)
	}
	var per time.Duration
	switch u := strings.TrimSpace(unit); u {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		d, err := ParseDuration(u)
		if err != nil || d <= 0 {
			return Rate{}, fmt.Errorf("invalid rate %q (want a count per s, m or h, like \"100/s\")", s)
		}
		per = d
	}
	return Rate{N: n, Per: per}, nil
}

// oneCommandWord reports whether s can go on a command line as a SASL
// name: no control characters, no spaces at its ends.
func oneCommandWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// parseRouteTo parses a route's next hop: "host:port" and "[ip]:port"
// connect there; "[host]" or a bare IP address connect to port 25; a bare
// name is looked up by MX, as Postfix's relayhost does.
func parseRouteTo(s string) (host string, port int, mx bool, err error) {
	if h, ps, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, false, fmt.Errorf("invalid port in %q", s)
		}
		if h == "" || !validHost(h) {
			return "", 0, false, fmt.Errorf("invalid host in %q (want host:port, [ip]:port or a name)", s)
		}
		return strings.ToLower(h), n, false, nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		h := s[1 : len(s)-1]
		if !validHost(h) {
			return "", 0, false, fmt.Errorf("invalid host in %q (want host:port, [ip]:port or a name)", s)
		}
		return strings.ToLower(h), 25, false, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String(), 25, false, nil
	}
	if d := normDomain(s); validDomain(d) {
		return d, 25, true, nil
	}
	return "", 0, false, fmt.Errorf("invalid next hop %q (want host:port, [ip]:port or a name)", s)
}
