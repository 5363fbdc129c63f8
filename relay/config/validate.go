package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// build checks every value of fc and converts it to a Config. Mistakes are
// collected in v.errs; the returned Config is meaningful only without them.
func (v *validator) build(fc *fileConfig, configPath string) *Config {
	c := &Config{File: configPath}

	c.Hostname = normDomain(fc.Hostname)
	if !validDomain(c.Hostname) {
		v.errorf(p("hostname"), "invalid host name %q", fc.Hostname)
	}
	for i, a := range fc.Aliases {
		if lit, ok := normLiteral(a); ok {
			c.Aliases = append(c.Aliases, lit)
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(a), "[") {
			v.errorf(elem(p("aliases"), i), "invalid address literal %q (want [192.0.2.1] or [IPv6:2001:db8::1])", a)
			continue
		}
		c.Aliases = append(c.Aliases, v.domain(elem(p("aliases"), i), a))
	}

	c.LocalDomains = v.domains(p("local_domains"), fc.LocalDomains)
	c.RelayDomains = v.domains(p("relay_domains"), fc.RelayDomains)
	for i, d := range c.RelayDomains {
		if containsDomain(c.LocalDomains, d) {
			v.errorf(elem(p("relay_domains"), i), "%q is also in local_domains; a domain is either delivered here or relayed", d)
		}
	}
	for i, s := range fc.RelayNetworks {
		if pfx, err := parsePrefix(s); err != nil {
			v.errorf(elem(p("relay_networks"), i), "%v", err)
		} else {
			c.RelayNetworks = append(c.RelayNetworks, pfx)
		}
	}

	switch m := SourceRouteMode(strings.TrimSpace(fc.SourceRoutes)); m {
	case SourceRoutesFollow, SourceRoutesStrip, SourceRoutesReject:
		c.SourceRoutes = m
	default:
		v.errorf(p("source_routes"), "invalid value %q (want follow, strip or reject)", fc.SourceRoutes)
	}
	c.PercentHack = fc.PercentHack
	c.RouteLiterals = fc.RouteLiterals
	c.MaxHops = v.count(p("max_hops"), fc.MaxHops, 1)
	c.AllowInsecureAuth = fc.AllowInsecureAuth
	for user, doms := range fc.SenderDomains {
		path := p("sender_domains", user)
		if c.SenderDomains == nil {
			c.SenderDomains = map[string][]string{}
		}
		var out []string
		for i, d := range doms {
			if strings.TrimSpace(d) == "*" {
				out = append(out, "*")
				continue
			}
			out = append(out, v.domain(elem(path, i), d))
		}
		c.SenderDomains[strings.ToLower(user)] = out
	}

	v.smtp(c, fc)

	c.POP3.Listen = v.listeners(p("pop3", "listen"), fc.POP3.Listen)
	c.POP3.ListenTLS = v.listeners(p("pop3", "listen_tls"), fc.POP3.ListenTLS)

	c.Admin.MetricsListen = strings.TrimSpace(fc.Admin.MetricsListen)
	if c.Admin.MetricsListen != "" {
		if err := checkListen(c.Admin.MetricsListen); err != nil {
			v.errorf(p("admin", "metrics_listen"), "%v", err)
		}
	}
	c.Admin.History = v.duration(p("admin", "history"), fc.Admin.History, 0)

	if (fc.TLS.Cert == "") != (fc.TLS.Key == "") {
		// Blame the one that is set: the other has no line in the file.
		if fc.TLS.Cert == "" {
			v.errorf(p("tls", "key"), "is set but tls.cert is not; both are needed")
		} else {
			v.errorf(p("tls", "cert"), "is set but tls.key is not; both are needed")
		}
	}
	// listen_tls without a certificate is refused when the relay starts
	// (relay.New), not here: relay serve --self-signed may still supply one.

	v.queue(c, fc)
	v.routes(c, fc)
	v.dkim(c, fc)
	v.auth(c, fc)
	v.submission(c, fc)
	v.webhooks(c, fc)
	c.RecipientDelimiter = fc.RecipientDelim
	if len(c.RecipientDelimiter) > 1 || strings.ContainsAny(c.RecipientDelimiter, "@<>\" \t,:") {
		v.errorf(p("recipient_delimiter"), "invalid delimiter %q (want one character such as + or -, or \"\")", fc.RecipientDelim)
	}
	v.dns(c, fc)
	v.fleet(c, fc)

	// Paths last: they all hang off data_dir.
	if strings.TrimSpace(fc.DataDir) == "" {
		v.errorf(p("data_dir"), "must not be empty")
		return c
	}
	dir, err := resolveDataDir(fc.DataDir, configPath, v.inFile("data_dir"))
	if err != nil {
		v.errorf(p("data_dir"), "%v", err)
		return c
	}
	c.DataDir = dir
	c.UsersFile = underDir(dir, fc.UsersFile)
	c.AliasesFile = underDir(dir, fc.AliasesFile)
	for i := range c.Webhooks {
		c.Webhooks[i].SecretFile = underDir(dir, c.Webhooks[i].SecretFile)
	}
	c.Fleet.RedisPasswordFile = underDir(dir, c.Fleet.RedisPasswordFile)
	c.Admin.Socket = underDir(dir, fc.Admin.Socket)
	c.TLS.Cert = underDir(dir, fc.TLS.Cert)
	c.TLS.Key = underDir(dir, fc.TLS.Key)
	c.TLS.CAFile = underDir(dir, fc.TLS.CAFile)
	v.place(c, p("tls", "cert"))
	v.place(c, p("tls", "key"))
	v.place(c, p("tls", "ca_file"))
	for i := range c.Routes {
		c.Routes[i].AuthPasswordFile = underDir(dir, c.Routes[i].AuthPasswordFile)
		c.Routes[i].TLSCAFile = underDir(dir, c.Routes[i].TLSCAFile)
	}
	for i := range c.DKIM.Sign {
		c.DKIM.Sign[i].Key = underDir(dir, c.DKIM.Sign[i].Key)
		v.place(c, p("dkim", "sign", indexPart(i), "key"))
	}
	for i := range c.ARC.Sign {
		c.ARC.Sign[i].Key = underDir(dir, c.ARC.Sign[i].Key)
		v.place(c, p("arc", "sign", indexPart(i), "key"))
	}
	return c
}

// place remembers where the file set path, for Config.KeyError.
func (v *validator) place(c *Config, path []string) {
	if line, ok := v.file.idx[pathKey(path)]; ok {
		if c.places == nil {
			c.places = map[string]string{}
		}
		c.places[displayKey(path)] = fmt.Sprintf("%s:%d", v.file.name, line)
	}
}

// p builds a key path; it reads better than a slice literal at call sites.
func p(parts ...string) []string { return parts }

// elem is the path of element i of the array at path.
func elem(path []string, i int) []string {
	return append(append([]string(nil), path...), indexPart(i))
}

func (v *validator) smtp(c *Config, fc *fileConfig) {
	s := &fc.SMTP
	c.SMTP.Listen = v.listeners(p("smtp", "listen"), s.Listen)
	c.SMTP.ListenTLS = v.listeners(p("smtp", "listen_tls"), s.ListenTLS)
	c.SMTP.MaxMessageSize = v.size(p("smtp", "max_message_size"), s.MaxMessageSize, 1)
	c.SMTP.MaxRecipients = v.count(p("smtp", "max_recipients"), s.MaxRecipients, 1)
	// RFC 5321 §4.5.3.1.4: a server must accept command lines of 512 octets.
	c.SMTP.MaxLineLength = int(min(v.size(p("smtp", "max_line_length"), s.MaxLineLength, 512), math.MaxInt32))
	c.SMTP.MaxErrors = v.count(p("smtp", "max_errors"), s.MaxErrors, 1)
	c.SMTP.CommandTimeout = v.duration(p("smtp", "command_timeout"), s.CommandTimeout, 1)
	c.SMTP.DataTimeout = v.duration(p("smtp", "data_timeout"), s.DataTimeout, 1)
	c.SMTP.MaxConnections = v.count(p("smtp", "max_connections"), s.MaxConnections, 1)
	c.SMTP.MaxConnsPerIP = v.count(p("smtp", "max_conns_per_ip"), s.MaxConnsPerIP, 1)
	c.SMTP.MaxConnsPerTrustedIP = v.count(p("smtp", "max_conns_per_trusted_ip"), s.MaxConnsTrust, 1)
	c.SMTP.ReservedPercent = v.count(p("smtp", "reserved_percent"), s.ReservedPct, 0)
	if c.SMTP.ReservedPercent > 90 {
		v.errorf(p("smtp", "reserved_percent"), "%d is more than 90 (outside clients need slots too)", c.SMTP.ReservedPercent)
	}
	c.SMTP.StressPercent = v.count(p("smtp", "stress_percent"), s.StressPct, 1)
	if c.SMTP.StressPercent > 100 {
		v.errorf(p("smtp", "stress_percent"), "%d is more than 100", c.SMTP.StressPercent)
	}
	c.SMTP.StressTimeout = v.duration(p("smtp", "stress_timeout"), s.StressTimeout, 1)
	c.SMTP.MaxCommands = v.count(p("smtp", "max_commands"), s.MaxCommands, 1)
	c.SMTP.MaxSessionRecipients = v.count(p("smtp", "max_session_recipients"), s.MaxSessionRcpt, 1)
	c.SMTP.SessionTimeout = v.duration(p("smtp", "session_timeout"), s.SessionTimeout, 1)
	c.SMTP.TarpitAfter = v.count(p("smtp", "tarpit_after"), s.TarpitAfter, 0)
	c.SMTP.TarpitDelay = v.duration(p("smtp", "tarpit_delay"), s.TarpitDelay, 0)
	switch m := PriorityPolicy(strings.TrimSpace(s.MTPriorityUntr)); m {
	case PriorityReset, PriorityKeep:
		c.SMTP.MTPriorityUntrusted = m
	default:
		v.errorf(p("smtp", "mt_priority_untrusted"), "invalid value %q (want reset or keep)", s.MTPriorityUntr)
	}
}

func (v *validator) queue(c *Config, fc *fileConfig) {
	q := &fc.Queue
	c.Queue.RetryMin = v.duration(p("queue", "retry_min"), q.RetryMin, 1)
	c.Queue.RetryMax = v.duration(p("queue", "retry_max"), q.RetryMax, 1)
	if c.Queue.RetryMin > 0 && c.Queue.RetryMax > 0 && c.Queue.RetryMin > c.Queue.RetryMax {
		// Blame whichever of the two the file changed.
		if v.inFile("queue", "retry_max") || !v.inFile("queue", "retry_min") {
			v.errorf(p("queue", "retry_max"), "%v is less than queue.retry_min %v", c.Queue.RetryMax, c.Queue.RetryMin)
		} else {
			v.errorf(p("queue", "retry_min"), "%v is more than queue.retry_max %v", c.Queue.RetryMin, c.Queue.RetryMax)
		}
	}
	c.Queue.Lifetime = v.duration(p("queue", "lifetime"), q.Lifetime, 1)
	c.Queue.DelayWarning = v.duration(p("queue", "delay_warning"), q.DelayWarning, 0)
	c.Queue.PerHopConcurrency = v.count(p("queue", "per_hop_concurrency"), q.PerHopConcurrency, 1)
	c.Queue.MinFreeSpace = v.size(p("queue", "min_free_space"), q.MinFreeSpace, 0)
	c.Queue.MaxMessageRate = v.rate(p("queue", "max_message_rate"), q.MaxMessageRate)
	c.Queue.MaxMessagesPerConnection = v.count(p("queue", "max_messages_per_connection"), q.MaxMsgsPerConn, 0)
	c.Queue.ThrottleRestore = v.duration(p("queue", "throttle_restore"), q.ThrottleRestore, 1)
}

func (v *validator) dkim(c *Config, fc *fileConfig) {
	c.DKIM.Verify = fc.DKIM.Verify
	c.DKIM.RejectFailures = v.domains(p("dkim", "reject_failures"), fc.DKIM.RejectFailures)
	c.DKIM.Sign = v.signKeys("dkim", fc.DKIM.Sign)
	c.ARC.Verify = fc.ARC.Verify
	c.ARC.Sign = v.signKeys("arc", fc.ARC.Sign)
	if len(c.ARC.Sign) > 1 {
		v.errorf(p("arc", "sign", indexPart(1)), "only one [[arc.sign]] key: an ARC set carries one seal")
	}
	c.DKIM.Keys = map[string]string{}
	for name, txt := range fc.DKIM.Keys {
		at := p("dkim", "keys", name)
		n := normDomain(name)
		sel, dom, ok := strings.Cut(n, "._domainkey.")
		if !ok || !validDomain(sel) || !validDomain(dom) {
			v.errorf(at, "invalid name %q (want <selector>._domainkey.<domain>)", name)
			continue
		}
		if _, dup := c.DKIM.Keys[n]; dup {
			v.errorf(at, "%q is listed twice", n)
			continue
		}
		if strings.TrimSpace(txt) == "" {
			v.errorf(at, "empty TXT record")
			continue
		}
		c.DKIM.Keys[n] = strings.TrimSpace(txt)
	}
}

// auth checks [auth]: each refusal needs its check, and DMARC needs
// both results it is judged on.
func (v *validator) auth(c *Config, fc *fileConfig) {
	a := fc.Auth
	c.Auth = Auth{SPF: a.SPF, SPFRejectFail: a.SPFRejectFail, DMARC: a.DMARC, DMARCReject: a.DMARCReject, CheckRelayNetworks: a.CheckRelayNetworks}
	if a.SPFRejectFail && !a.SPF {
		v.errorf(p("auth", "spf_reject_fail"), "needs spf = true")
	}
	if a.DMARCReject && !a.DMARC {
		v.errorf(p("auth", "dmarc_reject"), "needs dmarc = true")
	}
	if a.DMARC && !a.SPF {
		v.errorf(p("auth", "dmarc"), "needs spf = true: DMARC is judged on the SPF result")
	}
	if a.DMARC && !c.DKIM.Verify {
		v.errorf(p("auth", "dmarc"), "needs dkim.verify = true: DMARC is judged on the DKIM results")
	}
}

// signKeys checks the [[table.sign]] entries of [dkim] or [arc].
func (v *validator) signKeys(table string, entries []fileDKIMSign) []DKIMSign {
	var out []DKIMSign
	seen := map[string]bool{}
	for i, s := range entries {
		at := func(key string) []string { return p(table, "sign", indexPart(i), key) }
		var ds DKIMSign
		if s.Domain == "" {
			v.errorf(at("domain"), "missing")
		} else {
			ds.Domain = v.domain(at("domain"), s.Domain)
		}
		// A selector is one or more DNS labels (RFC 6376 §3.1).
		ds.Selector = normDomain(s.Selector)
		if s.Selector == "" {
			v.errorf(at("selector"), "missing")
		} else if !validDomain(ds.Selector) {
			v.errorf(at("selector"), "invalid selector %q", s.Selector)
		}
		ds.Key = strings.TrimSpace(s.Key)
		if ds.Key == "" {
			v.errorf(at("key"), "missing")
		}
		if k := ds.Selector + "._domainkey." + ds.Domain; seen[k] && ds.Domain != "" && ds.Selector != "" {
			v.errorf(at("selector"), "domain %q already has a key with selector %q", ds.Domain, ds.Selector)
		} else {
			seen[k] = true
		}
		out = append(out, ds)
	}
	return out
}

// domain normalises and checks one domain; path names it in errors.
func (v *validator) domain(path []string, d string) string {
	n := normDomain(d)
	if !validDomain(n) {
		v.errorf(path, "invalid domain %q", d)
	}
	return n
}

// domains normalises and checks the list of domains at path, dropping
// duplicates.
func (v *validator) domains(path []string, list []string) []string {
	var out []string
	for i, d := range list {
		n := v.domain(elem(path, i), d)
		if !containsDomain(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// listeners checks a list of listen addresses.
func (v *validator) listeners(path []string, list []string) []string {
	var out []string
	for i, a := range list {
		a = strings.TrimSpace(a)
		if err := checkListen(a); err != nil {
			v.errorf(elem(path, i), "%v", err)
			continue
		}
		out = append(out, a)
	}
	return out
}

// count checks an integer setting against its minimum and the range of an
// int32, which is plenty for every count and the same on all platforms.
func (v *validator) count(path []string, n int64, lo int64) int {
	if n < lo {
		v.errorf(path, "%d is less than %d", n, lo)
		return int(lo)
	}
	if n > math.MaxInt32 {
		v.errorf(path, "%d is too large", n)
		return math.MaxInt32
	}
	return int(n)
}

// size parses a size given as an integer number of bytes or as a string
// with a unit, and checks it against its minimum.
func (v *validator) size(path []string, raw any, lo int64) int64 {
	var n int64
	switch x := raw.(type) {
	case int64:
		n = x
	case string:
		var err error
		if n, err = ParseSize(x); err != nil {
			v.errorf(path, "%v", err)
			return lo
		}
	default:
		v.errorf(path, `invalid size %v (want bytes, or a string like "25MiB")`, raw)
		return lo
	}
	if n < lo {
		v.errorf(path, "%d bytes is less than %d", n, lo)
		return lo
	}
	return n
}

// duration parses a duration and checks it against its minimum (0 or 1ns,
// that is: may it be zero).
func (v *validator) duration(path []string, s string, lo time.Duration) time.Duration {
	d, err := ParseDuration(s)
	if err != nil {
		v.errorf(path, "%v", err)
		return lo
	}
	if d < lo {
		v.errorf(path, "must be more than zero")
		return lo
	}
	return d
}

// parsePrefix parses a network in CIDR form or a single address, which
// means just that host.
func parsePrefix(s string) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	var pfx netip.Prefix
	if strings.Contains(t, "/") {
		var err error
		if pfx, err = netip.ParsePrefix(t); err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid network %q (want an address or address/bits)", s)
		}
	} else {
		a, err := netip.ParseAddr(t)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid network %q (want an address or address/bits)", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	// Clients are matched by their unmapped address (InRelayNetworks), so an
	// IPv4-mapped network has to become the IPv4 network to ever match.
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}

// checkListen checks a host:port listen address. The host may be empty
// (all addresses), an IP address or a name; the port is a number, 0 for
// any free port.
func checkListen(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("invalid address %q (want host:port)", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port in %q", a)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("invalid host in %q", a)
	}
	return nil
}

// validHost reports whether h is an IP address or a plausible host name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return validDomain(normDomain(h))
}

// underDir resolves a relative path against dir; "" stays "" (not set).
func underDir(dir, path string) string {
	path = strings.TrimSpace(path)
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}
