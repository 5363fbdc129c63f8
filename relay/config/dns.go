package config

import (
	"net/netip"
	"strings"
	"time"
)

// DNS is the [dns] table: the resolver every lookup of the relay goes
// through (MX, A/AAAA, TXT for DKIM and MTA-STS, TLSA for DANE).
type DNS struct {
	// Servers (servers) are "ip:port" addresses of recursive resolvers,
	// tried in order; empty: the nameservers of /etc/resolv.conf. DANE
	// trusts their AD bit, so with DANE on they must be validating
	// resolvers reached over loopback.
	Servers []string
	// Timeout (timeout) bounds one query to one server; Attempts
	// (attempts) is how many times the list is tried before a lookup
	// fails temporarily.
	Timeout  time.Duration
	Attempts int
	// MXPort (mx_port) is the port MX hosts (and the A/AAAA of a domain
	// without MX) are delivered to by the default route: 25. Only tests
	// on loopback, where every relay of a fleet cannot have port 25,
	// and private networks change it.
	MXPort int
}

// MTASTS is the [mta_sts] table (RFC 8461).
type MTASTS struct {
	// Enabled (enabled) looks up and applies the MTA-STS policies of
	// recipient domains on MX deliveries.
	Enabled bool
	// Port (port) is the HTTPS port of policy hosts. RFC 8461 says 443;
	// only tests on loopback change it.
	Port int
}

// DANE is the [dane] table (RFC 7672).
type DANE struct {
	// Enabled (enabled) looks up TLSA records of MX hosts whose MX answer
	// was validated, and then requires TLS matching them.
	Enabled bool
}

// TLSRPT is the [tls_rpt] table (RFC 8460).
type TLSRPT struct {
	// Enabled (enabled) records the outcome of every policy-bound TLS
	// session and mails a report to each domain that publishes a mailto:
	// rua in _smtp._tls.
	Enabled bool
	// Interval (interval) is the report period: one day per the RFC.
	Interval time.Duration
	// From (from) is the reports' sender; "" means postmaster@hostname.
	From string
}

type fileDNS struct {
	Servers  []string `toml:"servers"`
	Timeout  string   `toml:"timeout"`
	Attempts int64    `toml:"attempts"`
	MXPort   int64    `toml:"mx_port"`
}

type fileMTASTS struct {
	Enabled bool  `toml:"enabled"`
	Port    int64 `toml:"port"`
}

type fileDANE struct {
	Enabled bool `toml:"enabled"`
}

type fileTLSRPT struct {
	Enabled  bool   `toml:"enabled"`
	Interval string `toml:"interval"`
	From     string `toml:"from"`
}

// dns checks [dns], [mta_sts], [dane] and [tls_rpt].
func (v *validator) dns(c *Config, fc *fileConfig) {
	for i, s := range fc.DNS.Servers {
		s = strings.TrimSpace(s)
		if ap, err := netip.ParseAddrPort(s); err == nil {
			c.DNS.Servers = append(c.DNS.Servers, ap.String())
		} else if a, err := netip.ParseAddr(s); err == nil {
			c.DNS.Servers = append(c.DNS.Servers, netip.AddrPortFrom(a, 53).String())
		} else {
			v.errorf(elem(p("dns", "servers"), i), "%q is not an IP address with an optional port", s)
		}
	}
	c.DNS.Timeout = v.duration(p("dns", "timeout"), fc.DNS.Timeout, 1)
	c.DNS.Attempts = v.count(p("dns", "attempts"), fc.DNS.Attempts, 1)
	c.DNS.MXPort = v.count(p("dns", "mx_port"), fc.DNS.MXPort, 1)
	if c.DNS.MXPort > 65535 {
		v.errorf(p("dns", "mx_port"), "%d is not a port", c.DNS.MXPort)
	}

	c.MTASTS.Enabled = fc.MTASTS.Enabled
	c.MTASTS.Port = v.count(p("mta_sts", "port"), fc.MTASTS.Port, 1)
	if c.MTASTS.Port > 65535 {
		v.errorf(p("mta_sts", "port"), "%d is not a port", c.MTASTS.Port)
	}
	c.DANE.Enabled = fc.DANE.Enabled

	c.TLSRPT.Enabled = fc.TLSRPT.Enabled
	c.TLSRPT.Interval = v.duration(p("tls_rpt", "interval"), fc.TLSRPT.Interval, 1)
	c.TLSRPT.From = strings.TrimSpace(fc.TLSRPT.From)
	if f := c.TLSRPT.From; f != "" && (strings.Count(f, "@") != 1 || strings.ContainsAny(f, "<> \t\r\n")) {
		v.errorf(p("tls_rpt", "from"), "%q is not an address like postmaster@example.org", f)
	}
}
