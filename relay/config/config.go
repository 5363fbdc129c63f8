// Package config loads the relay daemon's configuration: a TOML file read
// over embedded defaults (defaults.toml), checked strictly and turned into
// typed values, so that the rest of the daemon never parses a size, a
// duration or a network itself and every mistake in the file is reported
// with its file, line and key before the daemon starts.
//
// The format is the one of docs/design.md §13; defaults.toml in this directory is
// its reference, with every key and its default value.
package config

import (
	_ "embed"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/relay-mta/relay/queue/ratelimit"
)

// defaultsTOML holds the defaults. They are kept as a TOML file, read by the
// same code as a user's file, so that the documented defaults and the real
// ones cannot drift apart.
//
//go:embed defaults.toml
var defaultsTOML []byte

// defaultsName is how errors and positions name the embedded defaults.
const defaultsName = "defaults.toml"

// SourceRouteMode says what the relay does with a source-routed recipient
// such as <@b.test,@c.test:user@d.test> (docs/design.md §8).
type SourceRouteMode string

// The values of source_routes.
const (
	// SourceRoutesFollow sends the message to the route's first hop that is
	// not one of this relay's names, keeping the rest of the route.
	SourceRoutesFollow SourceRouteMode = "follow"
	// SourceRoutesStrip drops the route and delivers to the final address,
	// as RFC 5321 §3.6.1 allows.
	SourceRoutesStrip SourceRouteMode = "strip"
	// SourceRoutesReject refuses source-routed recipients.
	SourceRoutesReject SourceRouteMode = "reject"
)

// PriorityPolicy says what the relay does with the MT-PRIORITY (RFC 6710)
// of a client that is not trusted.
type PriorityPolicy string

// The values of smtp.mt_priority_untrusted.
const (
	// PriorityReset treats the message as priority 0, the RFC's default
	// (RFC 6710 §4: priorities from untrusted sources are not honoured).
	PriorityReset PriorityPolicy = "reset"
	// PriorityKeep honours the priority whoever sent it.
	PriorityKeep PriorityPolicy = "keep"
)

// TLSMode is how the relay uses TLS towards a next hop.
type TLSMode string

// The values of a route's tls key.
const (
	// TLSOpportunistic uses STARTTLS when the next hop offers it and goes on
	// in plaintext when it does not.
	TLSOpportunistic TLSMode = "opportunistic"
	// TLSRequire defers the message rather than send it without TLS.
	TLSRequire TLSMode = "require"
	// TLSNone never starts TLS, for test networks and broken peers.
	TLSNone TLSMode = "none"
)

// Config is the daemon's configuration with every value parsed, checked and
// normalised: domains are lower case without a trailing dot, relative paths
// are resolved, sizes are bytes and durations are time.Duration. Field
// comments name the TOML key each field comes from.
type Config struct {
	// File is the config file this was loaded from; "" for Default().
	File string

	// Hostname (hostname) is the relay's own name: greeting, Received
	// header, and the first name it recognises in source routes.
	Hostname string
	// Aliases (aliases) are more names of this relay: domain names, or
	// address literals normalised to "[192.0.2.1]" / "[IPv6:2001:db8::1]".
	Aliases []string
	// DataDir (data_dir) is the absolute directory of the spool, the
	// mailboxes, the users file and the admin socket.
	DataDir string
	// LocalDomains (local_domains) are delivered to local mailboxes.
	LocalDomains []string
	// RelayDomains (relay_domains) are accepted from anyone and relayed
	// onward. A domain may not be both local and relay.
	RelayDomains []string
	// RelayNetworks (relay_networks) are the client networks allowed to
	// relay anywhere. A bare address in the file is a /32 or /128; IPv4
	// networks written as IPv4-mapped IPv6 are stored as IPv4.
	RelayNetworks []netip.Prefix
	// UsersFile (users_file) is the absolute path of the name:bcrypt file,
	// or "" for no users (no AUTH, no POP3 logins).
	UsersFile string
	// SourceRoutes (source_routes) says what to do with source routes.
	SourceRoutes SourceRouteMode
	// PercentHack (percent_hack) treats user%d@us as <@us:user@d>.
	PercentHack bool
	// RouteLiterals (route_literals) allows @[192.0.2.1] hops in source
	// routes.
	RouteLiterals bool
	// MaxHops (max_hops) is the number of Received headers above which a
	// message is refused with 554 5.4.6 (a mail loop). At least 1.
	MaxHops int
	// AllowInsecureAuth (allow_insecure_auth) allows AUTH and POP3 logins
	// without TLS from any address; for tests. Loopback clients may log in
	// without TLS anyway.
	AllowInsecureAuth bool
	// SenderDomains ([sender_domains]) grants authenticated users MAIL
	// FROM addresses beyond their own (user@ any local domain): user name
	// -> domains, "*" for any. Keys are lower-case user names.
	SenderDomains map[string][]string
	// AliasesFile (aliases_file) is the absolute path of the address
	// aliases file ("alias: user, user@remote"), or "" for none. Not to
	// be confused with Aliases, the relay's own names.
	AliasesFile string
	// RecipientDelimiter (recipient_delimiter) separates a local part
	// from its detail ("alice+lists"): such an address is delivered as
	// the part before it. "" turns sub-addressing off.
	RecipientDelimiter string

	SMTP  SMTP  // [smtp]
	POP3  POP3  // [pop3]
	Admin Admin // [admin]
	TLS   TLS   // [tls]
	Queue Queue // [queue]
	// Routes ([[route]]) is the static routing table, in file order.
	Routes []Route
	DKIM   DKIM // [dkim]
	ARC    ARC  // [arc]
	Auth   Auth // [auth]
	// Submission ([submission]) is the message submission service.
	Submission Submission
	// Webhooks ([[webhook]]) receive delivery events, in file order.
	Webhooks []Webhook

	DNS    DNS    // [dns] (dns.go)
	MTASTS MTASTS // [mta_sts]
	DANE   DANE   // [dane]
	TLSRPT TLSRPT // [tls_rpt]
	Fleet  Fleet  // [fleet] (fleet.go)

	// places maps the keys naming files the daemon reads only when it
	// starts (tls.cert, tls.key, dkim.sign[i].key) to where the file set
	// them ("relay.toml:7"), for KeyError.
	places map[string]string
}

// KeyError is err, a problem found after loading with the file that the
// value of key names (it cannot be read, it holds no certificate), in the
// form of the errors Load returns: the config file and line that set the
// key, then the key ("relay.toml:7: tls.cert: open ...: no such file or
// directory"). Without a line (the value did not come from the file) it
// names the key alone.
func (c *Config) KeyError(key string, err error) error {
	if place := c.places[key]; place != "" {
		return fmt.Errorf("%s: %s: %w", place, key, err)
	}
	return fmt.Errorf("%s: %w", key, err)
}

// SMTP is the [smtp] table: the SMTP server's listeners and limits.
type SMTP struct {
	// Listen (listen) are host:port addresses for plain SMTP with STARTTLS.
	// Port 0 picks a free port, for tests.
	Listen []string
	// ListenTLS (listen_tls) are host:port addresses for implicit TLS
	// (RFC 8314). Not empty only when TLS has a cert and key.
	ListenTLS []string
	// MaxMessageSize (max_message_size) in bytes, announced in SIZE.
	MaxMessageSize int64
	// MaxRecipients (max_recipients) per message.
	MaxRecipients int
	// MaxLineLength (max_line_length) is the longest command line accepted,
	// CRLF included, in bytes; at least RFC 5321's 512.
	MaxLineLength int
	// MaxErrors (max_errors) is how many bad commands a session may send
	// before the server closes it.
	MaxErrors int
	// CommandTimeout (command_timeout) is how long the server waits for a
	// command.
	CommandTimeout time.Duration
	// DataTimeout (data_timeout) is how long a whole DATA or BDAT transfer
	// may take.
	DataTimeout time.Duration
	// MaxConnections (max_connections) is the number of concurrent SMTP
	// sessions over all listeners.
	MaxConnections int
	// MaxConnsPerIP (max_conns_per_ip) limits concurrent sessions from one
	// client address; MaxConnsPerTrustedIP (max_conns_per_trusted_ip)
	// from one address in relay_networks.
	MaxConnsPerIP        int
	MaxConnsPerTrustedIP int
	// ReservedPercent (reserved_percent) of max_connections is kept for
	// relay_networks and authenticated clients: outside clients together
	// never hold more than the rest.
	ReservedPercent int
	// StressPercent (stress_percent) of max_connections open puts the
	// server under stress: outside sessions get StressTimeout
	// (stress_timeout) rather than CommandTimeout to send a command, and
	// those idle longer are closed as new clients arrive.
	StressPercent int
	StressTimeout time.Duration
	// MaxCommands (max_commands) ends a session after that many commands.
	MaxCommands int
	// MaxSessionRecipients (max_session_recipients) limits accepted
	// recipients over a whole session.
	MaxSessionRecipients int
	// SessionTimeout (session_timeout) bounds a whole session.
	SessionTimeout time.Duration
	// TarpitAfter (tarpit_after) refused recipients in a session, and each
	// further refusal is answered TarpitDelay (tarpit_delay) later than the
	// one before; 0 disables the tarpit.
	TarpitAfter int
	TarpitDelay time.Duration
	// MTPriorityUntrusted (mt_priority_untrusted) is what happens to the
	// MT-PRIORITY of a client neither in relay_networks nor authenticated.
	MTPriorityUntrusted PriorityPolicy
}

// POP3 is the [pop3] table: the POP3 server's listeners.
type POP3 struct {
	// Listen (listen) are host:port addresses for POP3 with STLS.
	Listen []string
	// ListenTLS (listen_tls) are host:port addresses for implicit TLS.
	ListenTLS []string
}

// Admin is the [admin] table: the control socket and metrics.
type Admin struct {
	// Socket (socket) is the absolute path of the admin unix socket, or ""
	// for none.
	Socket string
	// MetricsListen (metrics_listen) is a host:port for /metrics over HTTP,
	// or "" for none.
	MetricsListen string
	// History (history) is how long retired messages stay visible to
	// `relay queue show`.
	History time.Duration
}

// TLS is the [tls] table: the server certificate. Both paths are absolute,
// or both are "" (no STARTTLS, no implicit TLS listeners).
type TLS struct {
	Cert string // cert: PEM certificate chain
	Key  string // key: PEM private key
	// CAFile (ca_file) is an absolute path of PEM CA certificates trusted,
	// besides the system's, to verify next hops (tls = "require", MTA-STS)
	// and MTA-STS policy hosts; "" for the system's alone.
	CAFile string
}

// Queue is the [queue] table: the retry policy.
type Queue struct {
	// RetryMin (retry_min) is the delay before the first retry; delays
	// double from there. Greater than zero.
	RetryMin time.Duration
	// RetryMax (retry_max) caps the retry delay; at least RetryMin.
	RetryMax time.Duration
	// Lifetime (lifetime) is how long a message is retried before it
	// bounces.
	Lifetime time.Duration
	// DelayWarning (delay_warning) is when the one delay DSN is sent; 0
	// means never.
	DelayWarning time.Duration
	// PerHopConcurrency (per_hop_concurrency) is the number of sessions at
	// once to one next hop; at least 1.
	PerHopConcurrency int
	// MinFreeSpace (min_free_space) is the free space data_dir must keep:
	// below it new mail is refused with 452 4.3.1 until space returns.
	// 0 means 4 × max_message_size + 64 MiB.
	MinFreeSpace int64
	// MaxMessageRate (max_message_rate) is the default of every next
	// hop's message rate ("100/s", "600/m"); zero: no limit.
	MaxMessageRate Rate
	// MaxMessagesPerConnection (max_messages_per_connection) is how many
	// messages one session to a next hop carries before it is closed and
	// a new one opened; 0: no limit.
	MaxMessagesPerConnection int
	// ThrottleRestore (throttle_restore) is how long a next hop that
	// asked us to slow down (421, 4.7.x) must go without asking again
	// before one step of the slow-down is taken back.
	ThrottleRestore time.Duration
}

// Rate is a number of messages per period; the zero Rate means no limit.
type Rate = ratelimit.Rate

// Route is one [[route]] entry: where mail for a domain goes, bypassing MX
// lookup of the recipient domain.
type Route struct {
	// Domain (domain) is an exact domain, "*.parent" for the subdomains of
	// parent, or "*" for every domain.
	Domain string
	// To (to) is the next hop as written in the file.
	To string
	// Host is the name or IP address to send to, without brackets.
	Host string
	// Port is the TCP port: the one in To, or 25 when To has none.
	Port int
	// MX is true when To is a bare name with no port and no brackets: the
	// relay then looks up Host's MX records (then its A/AAAA), as it would
	// for a recipient domain.
	MX bool
	// TLS (tls) is the TLS policy for this hop; opportunistic when absent,
	// require when AuthUser is set.
	TLS TLSMode
	// Hosts are every entry of To, in order: the next hops tried one
	// after the other within one delivery attempt (failover). Host, Port
	// and MX repeat the first. A hand-built Route may leave Hosts empty.
	Hosts []RouteHost

	// AuthUser (auth_user) is the name to log in with (AUTH PLAIN or
	// LOGIN, only over TLS); "" for no AUTH. The password is the first
	// line of AuthPasswordFile (auth_password_file, absolute), which the
	// relay refuses to read when group or others may read it.
	AuthUser         string
	AuthPasswordFile string
	// TLSCAFile (tls_ca_file, absolute) holds the PEM certificates that
	// verify this hop under tls = "require" instead of the system's
	// roots; TLSServerName (tls_server_name) is the name its certificate
	// must carry instead of the host's.
	TLSCAFile     string
	TLSServerName string
	// SourceIP (source_ip) is the local address connections to this hop
	// come from; invalid: chosen by the system.
	SourceIP netip.Addr
	// EHLOName (ehlo_name) is the name given in EHLO to this hop; "": the
	// hostname.
	EHLOName string
	// MaxMessageRate (max_message_rate), PerHopConcurrency
	// (per_hop_concurrency) and MaxMessagesPerConnection
	// (max_messages_per_connection) shape the traffic to this hop; zero:
	// the [queue] value.
	MaxMessageRate           Rate
	PerHopConcurrency        int
	MaxMessagesPerConnection int
}

// RouteHost is one next hop of a route's to.
type RouteHost struct {
	Host string // name or IP address, without brackets
	Port int
	MX   bool // a bare name: its MX records, then its addresses
}

// TLSImplicit speaks TLS from the first byte (RFC 8314, port 465),
// verified as TLSRequire is.
const TLSImplicit TLSMode = "implicit"

// DKIM is the [dkim] table.
type DKIM struct {
	// Verify (verify) checks DKIM signatures of incoming mail and records
	// the result in Authentication-Results.
	Verify bool
	// RejectFailures (reject_failures) are domains whose dkim=fail is
	// refused with 550 5.7.20.
	RejectFailures []string
	// Sign ([[dkim.sign]]) are the keys outgoing mail is signed with.
	Sign []DKIMSign
	// Keys ([dkim.keys]) are static TXT records by lower-case name
	// ("s1._domainkey.a.test"), checked before DNS so that test networks
	// need no DNS.
	Keys map[string]string
}

// ARC is the [arc] table: Authenticated Received Chain (RFC 8617).
type ARC struct {
	// Verify (verify) checks the ARC chain of incoming mail and records
	// the result (arc=) in Authentication-Results. Sealing checks it too:
	// a seal records the chain's status.
	Verify bool
	// Sign ([[arc.sign]]) is the key mail from other hosts is sealed
	// with; at most one entry, as an ARC set carries one seal. Its key
	// record is published as a DKIM one, at <selector>._domainkey.<domain>.
	Sign []DKIMSign
}

// Auth is the [auth] table: SPF and DMARC checks of incoming mail
// (docs/design.md §16). Everything is off by default.
type Auth struct {
	// SPF (spf) checks SPF (RFC 7208) at MAIL FROM and records spf= in
	// Authentication-Results.
	SPF bool
	// SPFRejectFail (spf_reject_fail) refuses an SPF fail at MAIL FROM
	// with 550 5.7.23.
	SPFRejectFail bool
	// DMARC (dmarc) judges the From domain's DMARC policy (RFC 7489)
	// and records dmarc=; mail its domain wants quarantined gets an
	// X-Relay-DMARC field.
	DMARC bool
	// DMARCReject (dmarc_reject) refuses mail whose domain's policy says
	// reject with 550 5.7.1 at the end of DATA, instead of marking it.
	DMARCReject bool
	// CheckRelayNetworks (check_relay_networks) checks clients in
	// relay_networks and authenticated ones too; by default they are
	// trusted and not checked.
	CheckRelayNetworks bool
}

// DKIMSign is one [[dkim.sign]] (or [[arc.sign]]) entry.
type DKIMSign struct {
	Domain   string // domain: the d= of the signature
	Selector string // selector: the s= of the signature
	Key      string // key: absolute path of the PEM private key
}

// IsLocalDomain reports whether mail for domain d is delivered to local
// mailboxes. Case and a trailing dot do not matter.
func (c *Config) IsLocalDomain(d string) bool {
	return containsDomain(c.LocalDomains, normDomain(d))
}

// IsRelayDomain reports whether d is one of relay_domains, accepted from
// anyone and relayed onward. Only exact names match, as in the file.
func (c *Config) IsRelayDomain(d string) bool {
	return containsDomain(c.RelayDomains, normDomain(d))
}

// IsOurName reports whether h names this relay: the hostname or one of the
// aliases. Case and a trailing dot do not matter; an address literal such as
// "[192.0.2.1]" matches an alias with the same address however it is
// written.
func (c *Config) IsOurName(h string) bool {
	if lit, ok := normLiteral(h); ok {
		for _, a := range c.Aliases {
			if a == lit {
				return true
			}
		}
		return false
	}
	n := normDomain(h)
	if n == "" {
		return false
	}
	if n == c.Hostname {
		return true
	}
	return containsDomain(c.Aliases, n)
}

// InRelayNetworks reports whether a client at ip may relay to any domain.
// IPv4-mapped IPv6 addresses count as IPv4, and zones are ignored, so that
// a dual-stack listener does not change the answer.
func (c *Config) InRelayNetworks(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range c.RelayNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func containsDomain(list []string, d string) bool {
	if d == "" {
		return false
	}
	for _, x := range list {
		if x == d {
			return true
		}
	}
	return false
}

// normDomain lower-cases a domain and removes one trailing dot (the root),
// the form every domain in Config is kept in.
func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// normLiteral turns an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]",
// RFC 5321 §4.1.3) into its canonical form. ok is false when s is not a
// well-formed literal.
func normLiteral(s string) (lit string, ok bool) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return "", false
	}
	inner := s[1 : len(s)-1]
	if len(inner) > 5 && strings.EqualFold(inner[:5], "ipv6:") {
		a, err := netip.ParseAddr(inner[5:])
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return "", false
		}
		return "[IPv6:" + a.String() + "]", true
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is4() {
		return "", false
	}
	return "[" + a.String() + "]", true
}

// validDomain reports whether d, already normalised, is a plausible domain
// name: dot-separated labels of 1 to 63 bytes, at most 253 bytes in all,
// with no character that could not appear in a DNS name or U-label. It is
// deliberately lenient (underscores, UTF-8) because its job is to catch
// typos such as a stray "@", ":" or space, not to police DNS.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 0x80: // part of a UTF-8 U-label
			default:
				return false
			}
		}
	}
	return true
}
