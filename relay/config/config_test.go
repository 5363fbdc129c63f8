package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// writeConfig writes content to a relay.toml in a fresh directory and
// returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	c := Default()
	dataDir := filepath.Join(mustGetwd(t), "relay-data")
	want := &Config{
		Hostname:           "localhost",
		DataDir:            dataDir,
		LocalDomains:       []string{"localhost"},
		RelayNetworks:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		UsersFile:          filepath.Join(dataDir, "users"),
		AliasesFile:        filepath.Join(dataDir, "aliases"),
		RecipientDelimiter: "+",
		SourceRoutes:       SourceRoutesFollow,
		MaxHops:            50,
		SMTP: SMTP{
			Listen:         []string{"127.0.0.1:2525"},
			MaxMessageSize: 25 << 20,
			MaxRecipients:  100,
			MaxLineLength:  2048,
			MaxErrors:      10,
			CommandTimeout: 5 * time.Minute,
			DataTimeout:    10 * time.Minute,
			MaxConnections: 500,
			MaxConnsPerIP:  50, MaxConnsPerTrustedIP: 250, ReservedPercent: 10, StressPercent: 75, StressTimeout: 10 * time.Second,
			MaxCommands: 10000, MaxSessionRecipients: 1000,
			SessionTimeout: 30 * time.Minute, TarpitAfter: 3, TarpitDelay: time.Second,
			MTPriorityUntrusted: PriorityReset,
		},
		POP3:  POP3{Listen: []string{"127.0.0.1:1100"}},
		Admin: Admin{Socket: filepath.Join(dataDir, "admin.sock"), History: 72 * time.Hour},
		Queue: Queue{
			RetryMin:          time.Minute,
			RetryMax:          time.Hour,
			Lifetime:          120 * time.Hour,
			DelayWarning:      4 * time.Hour,
			PerHopConcurrency: 8,
			ThrottleRestore:   time.Minute,
		},
		DKIM:   DKIM{Verify: true, Keys: map[string]string{}},
		ARC:    ARC{Verify: true},
		DNS:    DNS{Timeout: 5 * time.Second, Attempts: 2, MXPort: 25},
		MTASTS: MTASTS{Enabled: true, Port: 443},
		DANE:   DANE{Enabled: true},
		TLSRPT: TLSRPT{Enabled: true, Interval: 24 * time.Hour},
		Fleet:  Fleet{RedisKeyPrefix: "relay:"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() =\n%#v\nwant\n%#v", c, want)
	}

	// The defaults make a fresh relay accept mail for postmaster@localhost
	// from the local host and nothing else.
	if !c.IsLocalDomain("LocalHost.") {
		t.Error(`IsLocalDomain("LocalHost.") = false`)
	}
	if c.IsLocalDomain("example.com") || c.IsRelayDomain("localhost") {
		t.Error("defaults accept a domain they should not")
	}
	if !c.IsOurName("localhost") {
		t.Error(`IsOurName("localhost") = false`)
	}
	for ip, want := range map[string]bool{
		"127.0.0.1":        true,
		"127.255.0.9":      true,
		"::1":              true,
		"::ffff:127.0.0.1": true,
		"10.0.0.1":         false,
		"::2":              false,
	} {
		if got := c.InRelayNetworks(netip.MustParseAddr(ip)); got != want {
			t.Errorf("InRelayNetworks(%s) = %v, want %v", ip, got, want)
		}
	}
	if c.InRelayNetworks(netip.Addr{}) {
		t.Error("InRelayNetworks(zero Addr) = true")
	}
}

// An empty file is the defaults: the file is read over them.
func TestLoadEmptyIsDefault(t *testing.T) {
	path := writeConfig(t, "# nothing\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	d.File = path
	if !reflect.DeepEqual(c, d) {
		t.Errorf("Load(empty) =\n%#v\nwant defaults\n%#v", c, d)
	}
}

func TestLoadPartialKeepsDefaults(t *testing.T) {
	path := writeConfig(t, "hostname = \"b.test\"\n[smtp]\nmax_recipients = 7\n[queue]\nretry_max = \"3h\"\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "b.test" || c.SMTP.MaxRecipients != 7 || c.Queue.RetryMax != 3*time.Hour {
		t.Errorf("set keys: hostname %q, max_recipients %d, retry_max %v", c.Hostname, c.SMTP.MaxRecipients, c.Queue.RetryMax)
	}
	if !reflect.DeepEqual(c.SMTP.Listen, []string{"127.0.0.1:2525"}) || c.SMTP.MaxMessageSize != 25<<20 ||
		c.Queue.RetryMin != time.Minute || !reflect.DeepEqual(c.LocalDomains, []string{"localhost"}) {
		t.Errorf("absent keys lost their defaults: %+v", c)
	}
}

func TestLoadFull(t *testing.T) {
	path := filepath.Join("testdata", "full.toml")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(mustGetwd(t), "testdata", "data")
	want := &Config{
		File:     path,
		Hostname: "b.test",
		Aliases:  []string{"relay-b.test", "[127.0.0.2]", "[IPv6:2001:db8::2]"},
		DataDir:  dataDir,
		LocalDomains: []string{
			"b.test", "mail.b.test",
		},
		RelayDomains: []string{"c.test"},
		RelayNetworks: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.0.2.7/32"),
			netip.MustParsePrefix("2001:db8::/32"),
			netip.MustParsePrefix("172.16.0.0/12"),
		},
		UsersFile:          "/etc/relay/users",
		SourceRoutes:       SourceRoutesStrip,
		PercentHack:        true,
		RouteLiterals:      true,
		MaxHops:            30,
		AllowInsecureAuth:  true,
		SenderDomains:      map[string][]string{"alice": {"partner.test", "*"}},
		AliasesFile:        "/etc/relay/aliases",
		RecipientDelimiter: "-",
		SMTP: SMTP{
			Listen:         []string{"127.0.0.2:2525", "[::1]:2525"},
			ListenTLS:      []string{":4650"},
			MaxMessageSize: 10_000_000,
			MaxRecipients:  50,
			MaxLineLength:  4096,
			MaxErrors:      5,
			CommandTimeout: 2 * time.Minute,
			DataTimeout:    24 * time.Hour,
			MaxConnections: 64,
			MaxConnsPerIP:  50, MaxConnsPerTrustedIP: 250, ReservedPercent: 10, StressPercent: 75, StressTimeout: 10 * time.Second,
			MaxCommands: 10000, MaxSessionRecipients: 1000,
			SessionTimeout: 30 * time.Minute, TarpitAfter: 3, TarpitDelay: time.Second,
			MTPriorityUntrusted: PriorityKeep,
		},
		POP3: POP3{Listen: []string{"127.0.0.2:1100"}, ListenTLS: []string{"127.0.0.2:9950"}},
		Admin: Admin{
			Socket:        filepath.Join(dataDir, "run", "admin.sock"),
			MetricsListen: "127.0.0.1:9125",
			History:       7 * 24 * time.Hour,
		},
		TLS: TLS{Cert: filepath.Join(dataDir, "tls", "cert.pem"), Key: "/etc/relay/key.pem", CAFile: filepath.Join(dataDir, "tls", "ca.pem")},
		Queue: Queue{
			RetryMin:          30 * time.Second,
			RetryMax:          2 * time.Hour,
			Lifetime:          5 * 24 * time.Hour,
			DelayWarning:      0,
			PerHopConcurrency: 4,
			ThrottleRestore:   time.Minute,
		},
		Routes: []Route{
			{Domain: "c.test", To: "127.0.0.3:2525", Host: "127.0.0.3", Port: 2525, TLS: TLSRequire, Hosts: []RouteHost{{"127.0.0.3", 2525, false}}},
			{Domain: "*.d.test", To: "[2001:db8::3]:25", Host: "2001:db8::3", Port: 25, TLS: TLSOpportunistic, Hosts: []RouteHost{{"2001:db8::3", 25, false}}},
			{Domain: "*", To: "smarthost.test", Host: "smarthost.test", Port: 25, MX: true, TLS: TLSNone, Hosts: []RouteHost{{"smarthost.test", 25, true}}},
		},
		DKIM: DKIM{
			Verify:         false,
			RejectFailures: []string{"a.test", "paypal.test"},
			Sign: []DKIMSign{
				{Domain: "b.test", Selector: "s1", Key: filepath.Join(dataDir, "keys", "b.test.s1.pem")},
				{Domain: "mail.b.test", Selector: "s2.2024", Key: "/keys/rsa.pem"},
			},
			Keys: map[string]string{
				"s1._domainkey.a.test": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
				"s2._domainkey.c.test": "v=DKIM1; k=rsa; p=MIIB",
			},
		},
		ARC: ARC{
			Verify: false,
			Sign:   []DKIMSign{{Domain: "b.test", Selector: "arc1", Key: filepath.Join(dataDir, "keys", "b.test.arc1.pem")}},
		},
		Submission: Submission{Listen: []string{"127.0.0.2:587"}, ListenTLS: []string{"127.0.0.2:465"}},
		Webhooks: []Webhook{
			{Name: "crm", URL: "https://hooks.b.test/relay", Events: []string{"failed", "dsn"},
				SecretFile: filepath.Join(dataDir, "hook.secret"), Timeout: 3 * time.Second,
				RetryMin: 2 * time.Second, RetryMax: time.Hour, Lifetime: 0, Concurrency: 2},
			{Name: "hook-" + webhookHash("http://127.0.0.9:8080/ev"), URL: "http://127.0.0.9:8080/ev", Events: DefaultWebhookEvents,
				Timeout: 10 * time.Second, RetryMin: time.Second, RetryMax: 5 * time.Minute, Lifetime: 120 * time.Hour, Concurrency: 4},
		},
		DNS:    DNS{Servers: []string{"127.0.0.53:53", "[::1]:5353"}, Timeout: 2 * time.Second, Attempts: 3, MXPort: 2525},
		MTASTS: MTASTS{Port: 8443},
		TLSRPT: TLSRPT{Enabled: true, Interval: 12 * time.Hour, From: "tlsrpt@b.test"},
		Fleet:  Fleet{Redis: "redis.b.test:6380", RedisPasswordFile: filepath.Join(dataDir, "redis.pw"), RedisDB: 2, RedisKeyPrefix: "fleet-b:"},
		// Where the file names the files read at start, for KeyError.
		places: map[string]string{
			"tls.cert": "testdata/full.toml:52", "tls.key": "testdata/full.toml:53", "tls.ca_file": "testdata/full.toml:54",
			"dkim.sign[0].key": "testdata/full.toml:84", "dkim.sign[1].key": "testdata/full.toml:89",
			"arc.sign[0].key": "testdata/full.toml:101",
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(full.toml) =\n%#v\nwant\n%#v", c, want)
	}
	if err := c.KeyError("tls.key", errors.New("open /etc/relay/key.pem: no such file")); err.Error() != "testdata/full.toml:53: tls.key: open /etc/relay/key.pem: no such file" {
		t.Errorf("KeyError: %v", err)
	}

	for name, want := range map[string]bool{
		"b.test":               true,
		"B.TEST.":              true,
		"relay-b.test":         true,
		"[127.0.0.2]":          true,
		"[IPv6:2001:db8:0::2]": true,
		"[ipv6:2001:DB8::2]":   true,
		"[127.0.0.3]":          false,
		"[2001:db8::2]":        false, // IPv6 literals need the tag
		"c.test":               false,
		"":                     false,
	} {
		if got := c.IsOurName(name); got != want {
			t.Errorf("IsOurName(%q) = %v, want %v", name, got, want)
		}
	}
	if !c.IsLocalDomain("mail.b.test") || !c.IsRelayDomain("C.Test.") || c.IsRelayDomain("x.c.test") {
		t.Error("domain helpers disagree with the file")
	}
	for ip, want := range map[string]bool{
		"10.1.2.3":          true,
		"192.0.2.7":         true,
		"192.0.2.8":         false,
		"172.20.0.1":        true,
		"::ffff:172.20.0.1": true,
		"2001:db8:1::5":     true,
		"127.0.0.1":         false, // relay_networks replaced, not merged
	} {
		if got := c.InRelayNetworks(netip.MustParseAddr(ip)); got != want {
			t.Errorf("InRelayNetworks(%s) = %v, want %v", ip, got, want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string // the error after "<path>"
	}{
		{
			"unknown top-level key",
			"hostname = \"b.test\"\nhostnme = \"b.test\"\n",
			`:2: unknown key "hostnme"`,
		},
		{
			"unknown nested key",
			"hostname = \"b.test\"\n\n[smtp]\nlisten = [\"127.0.0.1:25\"]\n\n\nlissten = [\"127.0.0.1:26\"]\n",
			`:7: unknown key "smtp.lissten"`,
		},
		{
			"unknown key in array of tables",
			"[[route]]\ndomain = \"c.test\"\nto = \"h.test:25\"\ntsl = \"none\"\n",
			`:4: unknown key "route.tsl"`,
		},
		{
			"unknown table",
			"[smpt]\nlisten = []\n",
			`:1: unknown key "smpt"`,
		},
		{
			"webhook without url",
			"[[webhook]]\nevents = [\"failed\"]\n",
			`:1: webhook[0].url: missing`,
		},
		{
			"webhook with a URL of another scheme",
			"[[webhook]]\nurl = \"ftp://127.0.0.1/x\"\n",
			`:2: webhook[0].url: invalid URL "ftp://127.0.0.1/x" (want http://host[:port]/path or https://...)`,
		},
		{
			"webhook event unknown",
			"[[webhook]]\nurl = \"http://127.0.0.1/x\"\nevents = [\n  \"failed\",\n  \"bounced\",\n]\n",
			`:5: webhook[0].events[1]: unknown event "bounced" (want one of received, delivered, deferred, failed, dsn, held, released, deleted)`,
		},
		{
			"webhook with no events",
			"[[webhook]]\nurl = \"http://127.0.0.1/x\"\nevents = []\n",
			`:3: webhook[0].events: is empty (want some of received, delivered, deferred, failed, dsn, held, released, deleted)`,
		},
		{
			"two webhooks to one URL",
			"[[webhook]]\nurl = \"http://127.0.0.1/x\"\n[[webhook]]\nurl = \"http://127.0.0.1/x\"\n",
			`:3: webhook[1].name: webhook[0] has the same name "hook-42731f26" (set name to tell them apart)`,
		},
		{
			"webhook name with a slash",
			"[[webhook]]\nurl = \"http://127.0.0.1/x\"\nname = \"a/b\"\n",
			`:3: webhook[0].name: invalid name "a/b" (want 1 to 64 of a-z 0-9 . _ -)`,
		},
		{
			"webhook backoff upside down",
			"[[webhook]]\nurl = \"http://127.0.0.1/x\"\nretry_min = \"1h\"\nretry_max = \"1m\"\n",
			`:4: webhook[0].retry_max: 1m0s is less than retry_min 1h0m0s`,
		},
		{
			"submission without users",
			"users_file = \"\"\n[submission]\nlisten = [\"127.0.0.1:587\"]\n",
			`:3: submission.listen: needs users_file: submission requires AUTH`,
		},
		{
			"recipient delimiter too long",
			"recipient_delimiter = \"++\"\n",
			`:1: recipient_delimiter: invalid delimiter "++" (want one character such as + or -, or "")`,
		},
		{
			"bad duration",
			"[queue]\nretry_min = \"1x\"\n",
			`:2: queue.retry_min: invalid duration "1x"`,
		},
		{
			"negative duration",
			"[smtp]\ncommand_timeout = \"-5m\"\n",
			`:2: smtp.command_timeout: invalid duration "-5m": must not be negative`,
		},
		{
			"reserved share too large",
			"[smtp]\nreserved_percent = 95\n",
			`:2: smtp.reserved_percent: 95 is more than 90 (outside clients need slots too)`,
		},
		{
			"stress mode past the maximum",
			"[smtp]\nstress_percent = 101\n",
			`:2: smtp.stress_percent: 101 is more than 100`,
		},
		{
			"zero stress timeout",
			"[smtp]\nstress_timeout = \"0s\"\n",
			`:2: smtp.stress_timeout: must be more than zero`,
		},
		{
			"zero duration",
			"[queue]\nlifetime = \"0s\"\n",
			`:2: queue.lifetime: must be more than zero`,
		},
		{
			"MX port out of range",
			"[dns]\nmx_port = 70000\n",
			`:2: dns.mx_port: 70000 is not a port`,
		},
		{
			"DNS server by name",
			"[dns]\nservers = [\"127.0.0.1\", \"dns.example\"]\n",
			`:2: dns.servers[1]: "dns.example" is not an IP address with an optional port`,
		},
		{
			"MTA-STS port out of range",
			"[mta_sts]\nport = 70000\n",
			`:2: mta_sts.port: 70000 is not a port`,
		},
		{
			"fleet redis without a port",
			"[fleet]\nredis = \"127.0.0.1\"\n",
			`:2: fleet.redis: "127.0.0.1" is not host:port (Redis's address, e.g. "127.0.0.1:6379")`,
		},
		{
			"fleet redis port out of range",
			"[fleet]\nredis = \"redis.b.test:65536\"\n",
			`:2: fleet.redis: "redis.b.test:65536": "65536" is not a port`,
		},
		{
			"fleet redis host not a name",
			"[fleet]\nredis = \"red is:6379\"\n",
			`:2: fleet.redis: "red is:6379": "red is" is not a host name or an IP address`,
		},
		{
			"fleet password without redis",
			"[fleet]\nredis_password_file = \"redis.pw\"\n",
			`:2: fleet.redis_password_file: is set but fleet.redis is not`,
		},
		{
			"fleet negative db",
			"[fleet]\nredis = \"127.0.0.1:6379\"\nredis_db = -1\n",
			`:3: fleet.redis_db: -1 is less than 0`,
		},
		{
			"TLS-RPT sender without a domain",
			"[tls_rpt]\nfrom = \"postmaster\"\n",
			`:2: tls_rpt.from: "postmaster" is not an address like postmaster@example.org`,
		},
		{
			"bad size",
			"[smtp]\nmax_message_size = \"25MeB\"\n",
			`:2: smtp.max_message_size: invalid size "25MeB"`,
		},
		{
			"size of the wrong type",
			"[smtp]\nmax_message_size = 2.5\n",
			`:2: smtp.max_message_size: invalid size 2.5 (want bytes, or a string like "25MiB")`,
		},
		{
			"line length below RFC 5321",
			"[smtp]\nmax_line_length = 100\n",
			`:2: smtp.max_line_length: 100 bytes is less than 512`,
		},
		{
			"bad CIDR",
			"relay_networks = [\n  \"127.0.0.0/8\",\n  \"10.0.0/8\",\n]\n",
			`:3: relay_networks[1]: invalid network "10.0.0/8" (want an address or address/bits)`,
		},
		{
			"bad route tls",
			"[[route]]\ndomain = \"c.test\"\nto = \"127.0.0.3:2525\"\n\n[[route]]\ndomain = \"d.test\"\nto = \"127.0.0.4:2525\"\ntls = \"always\"\n",
			`:8: route[1].tls: invalid value "always" (want opportunistic, require, implicit or none)`,
		},
		{
			"bad source_routes",
			"source_routes = \"drop\"\n",
			`:1: source_routes: invalid value "drop" (want follow, strip or reject)`,
		},
		{
			"bad mt_priority_untrusted",
			"[smtp]\nmt_priority_untrusted = \"drop\"\n",
			`:2: smtp.mt_priority_untrusted: invalid value "drop" (want reset or keep)`,
		},
		{
			"syntax error",
			"hostname = \"b.test\"\n[smtp\nlisten = []\n",
			`:2:6: expected ']' to close table name`,
		},
		{
			"duplicate key",
			"hostname = \"b.test\"\nhostname = \"c.test\"\n",
			`:2:1: key hostname is already defined`,
		},
		{
			"wrong type",
			"max_hops = \"50\"\n",
			`:1: max_hops: wrong type: want an integer, got a TOML string`,
		},
		{
			"wrong element type",
			"local_domains = [\"b.test\", 3]\n",
			`:1: local_domains: wrong type: want an array of strings, got a TOML integer`,
		},
		{
			"max_hops zero",
			"max_hops = 0\n",
			`:1: max_hops: 0 is less than 1`,
		},
		{
			"per_hop_concurrency zero",
			"[queue]\nper_hop_concurrency = 0\n",
			`:2: queue.per_hop_concurrency: 0 is less than 1`,
		},
		{
			"retry_min above the default retry_max",
			"[queue]\nretry_min = \"2h\"\n",
			`:2: queue.retry_min: 2h0m0s is more than queue.retry_max 1h0m0s`,
		},
		{
			"retry_max below retry_min",
			"[queue]\nretry_min = \"10m\"\nretry_max = \"5m\"\n",
			`:3: queue.retry_max: 5m0s is less than queue.retry_min 10m0s`,
		},
		{
			"route without to points at its header",
			"[[route]]\ndomain = \"c.test\"\n",
			`:1: route[0].to: missing`,
		},
		{
			"bad route to",
			"[[route]]\ndomain = \"c.test\"\nto = \"127.0.0.3:99999\"\n",
			`:3: route[0].to: invalid port in "127.0.0.3:99999"`,
		},
		{
			"duplicate route",
			"[[route]]\ndomain = \"c.test\"\nto = \"a.test:25\"\n[[route]]\ndomain = \"C.TEST.\"\nto = \"b.test:25\"\n",
			`:5: route[1].domain: "c.test" already has a route (route[0])`,
		},
		{
			"bad route domain",
			"[[route]]\ndomain = \"c.*\"\nto = \"a.test:25\"\n",
			`:2: route[0].domain: invalid domain "c.*" (want a domain, *.domain or *)`,
		},
		{
			"route in an inline table",
			"route = [\n  { domain = \"c.test\", to = \"a.test:25\" },\n  { domain = \"d.test\", to = \"a test\" },\n]\n",
			`:3: route[1].to: invalid next hop "a test" (want host:port, [ip]:port or a name)`,
		},
		{
			"dotted key",
			"smtp.max_errors = 0\n",
			`:1: smtp.max_errors: 0 is less than 1`,
		},
		{
			"bad hostname",
			"hostname = \"b test\"\n",
			`:1: hostname: invalid host name "b test"`,
		},
		{
			"bad alias literal",
			"aliases = [\"[300.0.0.1]\"]\n",
			`:1: aliases[0]: invalid address literal "[300.0.0.1]" (want [192.0.2.1] or [IPv6:2001:db8::1])`,
		},
		{
			"local and relay domain",
			"local_domains = [\"b.test\"]\nrelay_domains = [\"B.test\"]\n",
			`:2: relay_domains[0]: "b.test" is also in local_domains; a domain is either delivered here or relayed`,
		},
		{
			"bad listen address",
			"[pop3]\nlisten = [\"127.0.0.1\"]\n",
			`:2: pop3.listen[0]: invalid address "127.0.0.1" (want host:port)`,
		},
		{
			"cert without key",
			"[tls]\ncert = \"c.pem\"\n",
			`:2: tls.cert: is set but tls.key is not; both are needed`,
		},
		{
			"dkim sign without selector",
			"[[dkim.sign]]\ndomain = \"b.test\"\nkey = \"k.pem\"\n",
			`:1: dkim.sign[0].selector: missing`,
		},
		{
			"two arc keys",
			"[[arc.sign]]\ndomain = \"b.test\"\nselector = \"a1\"\nkey = \"k.pem\"\n[[arc.sign]]\ndomain = \"b.test\"\nselector = \"a2\"\nkey = \"k2.pem\"\n",
			`:5: arc.sign[1]: only one [[arc.sign]] key: an ARC set carries one seal`,
		},
		{
			"arc sign without key",
			"[[arc.sign]]\ndomain = \"b.test\"\nselector = \"a1\"\n",
			`:1: arc.sign[0].key: missing`,
		},
		{
			"spf refusal without spf",
			"[auth]\nspf_reject_fail = true\n",
			`:2: auth.spf_reject_fail: needs spf = true`,
		},
		{
			"dmarc refusal without dmarc",
			"[auth]\nspf = true\ndmarc_reject = true\n",
			`:3: auth.dmarc_reject: needs dmarc = true`,
		},
		{
			"dmarc without spf",
			"[auth]\ndmarc = true\n",
			`:2: auth.dmarc: needs spf = true: DMARC is judged on the SPF result`,
		},
		{
			"dmarc without dkim verification",
			"[dkim]\nverify = false\n[auth]\nspf = true\ndmarc = true\n",
			`:5: auth.dmarc: needs dkim.verify = true: DMARC is judged on the DKIM results`,
		},
		{
			"bad dkim key name",
			"[dkim.keys]\n\"a.test\" = \"v=DKIM1; p=x\"\n",
			`:2: dkim.keys."a.test": invalid name "a.test" (want <selector>._domainkey.<domain>)`,
		},
		{
			"auth over opportunistic TLS",
			"[[route]]\ndomain = \"*\"\nto = \"smtp.example.net:587\"\ntls = \"opportunistic\"\nauth_user = \"u\"\nauth_password_file = \"pw\"\n",
			`:4: route[0].tls: "opportunistic" with auth_user: a password is only sent over verified TLS (want require or implicit)`,
		},
		{
			"auth user without password file",
			"[[route]]\ndomain = \"*\"\nto = \"smtp.example.net:587\"\nauth_user = \"u\"\n",
			`:4: route[0].auth_user: is set but auth_password_file is not; both are needed`,
		},
		{
			"bad failover entry",
			"[[route]]\ndomain = \"*\"\nto = [\"127.0.0.3:25\", \"a b:25\"]\n",
			`:3: route[0].to[1]: invalid host in "a b:25" (want host:port, [ip]:port or a name)`,
		},
		{
			"bad rate",
			"[queue]\nmax_message_rate = \"fast\"\n",
			`:2: queue.max_message_rate: invalid rate "fast" (want a count per s, m or h, like "100/s")`,
		},
		{
			"bad source_ip",
			"[[route]]\ndomain = \"*\"\nto = \"127.0.0.3:25\"\nsource_ip = \"localhost\"\n",
			`:4: route[0].source_ip: invalid IP address "localhost"`,
		},
		{
			"empty data_dir",
			"data_dir = \"\"\n",
			`:1: data_dir: must not be empty`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			if got, want := err.Error(), path+tt.want; got != want {
				t.Errorf("error\n got: %s\nwant: %s", got, want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != path || ce.Line == 0 {
				t.Errorf("error %#v is not an *Error with file and line", err)
			}
		})
	}
}

// All mistakes are reported at once, in file order, each with its place.
func TestLoadSeveralErrors(t *testing.T) {
	path := writeConfig(t, "[queue]\nretry_min = \"1x\"\n[smtp]\nmax_message_size = \"big\"\n[[route]]\ndomain = \"c.test\"\nto = \"a.test:25\"\ntls = \"maybe\"\n")
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	want := strings.Join([]string{
		path + `:2: queue.retry_min: invalid duration "1x"`,
		path + `:4: smtp.max_message_size: invalid size "big"`,
		path + `:8: route[0].tls: invalid value "maybe" (want opportunistic, require, implicit or none)`,
	}, "\n")
	if err.Error() != want {
		t.Errorf("error\n got: %s\nwant: %s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "queue.retry_min" || ce.Line != 2 {
		t.Errorf("first *Error = %+v", ce)
	}

	path = writeConfig(t, "hostnme = \"x\"\n[smtp]\nlissten = []\n")
	_, err = Load(path)
	want = path + ":1: unknown key \"hostnme\"\n" + path + ":3: unknown key \"smtp.lissten\""
	if err == nil || err.Error() != want {
		t.Errorf("error\n got: %v\nwant: %s", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming the path", err)
	}
}

func TestRelativePaths(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "etc")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "relay.toml")
	content := "data_dir = \"../spool\"\nusers_file = \"auth/users\"\n[admin]\nsocket = \"/run/relay.sock\"\n" +
		"[[dkim.sign]]\ndomain = \"b.test\"\nselector = \"s1\"\nkey = \"k.pem\"\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	// The working directory must not matter when the file sets data_dir.
	t.Chdir(t.TempDir())
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(root, "spool")
	if c.DataDir != spool {
		t.Errorf("DataDir = %q, want %q", c.DataDir, spool)
	}
	if want := filepath.Join(spool, "auth", "users"); c.UsersFile != want {
		t.Errorf("UsersFile = %q, want %q", c.UsersFile, want)
	}
	if c.Admin.Socket != "/run/relay.sock" {
		t.Errorf("Admin.Socket = %q, want it unchanged", c.Admin.Socket)
	}
	if want := filepath.Join(spool, "k.pem"); c.DKIM.Sign[0].Key != want {
		t.Errorf("DKIM key = %q, want %q", c.DKIM.Sign[0].Key, want)
	}

	// Without data_dir in the file, the default is relative to the working
	// directory, as it is for Default().
	wd := t.TempDir()
	t.Chdir(wd)
	path2 := filepath.Join(sub, "other.toml")
	if err := os.WriteFile(path2, []byte("users_file = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(path2)
	if err != nil {
		t.Fatal(err)
	}
	wd = mustGetwd(t) // t.TempDir may be behind a symlink
	if want := filepath.Join(wd, "relay-data"); c.DataDir != want {
		t.Errorf("DataDir = %q, want %q", c.DataDir, want)
	}
	if c.UsersFile != "" {
		t.Errorf(`UsersFile = %q, want "" (no users)`, c.UsersFile)
	}
	if want := filepath.Join(wd, "relay-data", "admin.sock"); c.Admin.Socket != want {
		t.Errorf("Admin.Socket = %q, want %q", c.Admin.Socket, want)
	}

	// An absolute data_dir is kept as written.
	abs := filepath.Join(root, "abs")
	path3 := filepath.Join(sub, "abs.toml")
	if err := os.WriteFile(path3, []byte("data_dir = \""+abs+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = Load(path3); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != abs {
		t.Errorf("DataDir = %q, want %q", c.DataDir, abs)
	}
}

func TestRouteTo(t *testing.T) {
	tests := []struct {
		to   string
		host string
		port int
		mx   bool
	}{
		{"127.0.0.3:2525", "127.0.0.3", 2525, false},
		{"[::1]:25", "::1", 25, false},
		{"Mail.C.Test:587", "mail.c.test", 587, false},
		{"[192.0.2.1]", "192.0.2.1", 25, false},
		{"[mail.c.test]", "mail.c.test", 25, false},
		{"192.0.2.1", "192.0.2.1", 25, false},
		{"C.Test.", "c.test", 25, true},
	}
	for _, tt := range tests {
		host, port, mx, err := parseRouteTo(tt.to)
		if err != nil || host != tt.host || port != tt.port || mx != tt.mx {
			t.Errorf("parseRouteTo(%q) = %q, %d, %v, %v; want %q, %d, %v", tt.to, host, port, mx, err, tt.host, tt.port, tt.mx)
		}
	}
	for _, bad := range []string{"a.test:0", "a.test:x", ":25", "a b", "a@b.test", "[a b]"} {
		if _, _, _, err := parseRouteTo(bad); err == nil {
			t.Errorf("parseRouteTo(%q) succeeded", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1024", 1024},
		{"0", 0},
		{"25MiB", 25 << 20},
		{"25mib", 25 << 20},
		{"10MB", 10_000_000},
		{"512KiB", 512 << 10},
		{"512 KiB", 512 << 10},
		{"1.5GiB", 3 << 29},
		{"2kb", 2000},
		{"7B", 7},
		{"1TiB", 1 << 40},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.2.3MiB", ".5MiB", "5.MiB", "10K", "10 XB", "1e3", "9999999999TiB", "1/2"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"5d", 5 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"0.5d", 12 * time.Hour},
		{" 4h ", 4 * time.Hour},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "1x", "d", "5", "-1h", "1d-1h", "h5d", "1h5d", "5dd", "99999999d", ".5d"} {
		if got, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", bad, got)
		}
	}
}

// The line index must follow TOML's ways of spelling the same key.
func TestBuildIndex(t *testing.T) {
	doc := "a = 1\n[t]\nb.c = 2\nl = [\n  \"x\",\n  # note\n  \"y\",\n]\n[[r]]\nk = 1\n[[r]]\n\nk = 2\n[r.s]\nz = 3\ni = { j = 4 }\n"
	idx, err := buildIndex([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"a":              1,
		"t":              2,
		"t.b.c":          3,
		"t.l":            4,
		"t.l[0]":         5,
		"t.l[1]":         7,
		"r":              9,
		"r[0]":           9,
		"r[0].k":         10,
		"r[1]":           11,
		"r[1].k":         13,
		"r[1].s":         14,
		"r[1].s.z":       15,
		"r[1].s.i":       16,
		"r[1].s.i.j":     16,
		"missing.key":    0,
		"r[2]":           0,
		"t.l[2]":         0,
		"r[0].s":         0,
		"r[1].s.i.other": 0,
	}
	for key, line := range want {
		parts := splitDisplay(key)
		if got := idx[pathKey(parts)]; got != line {
			t.Errorf("line of %s = %d, want %d", key, got, line)
		}
	}
}

// splitDisplay undoes displayKey for the simple keys of TestBuildIndex.
func splitDisplay(key string) []string {
	var parts []string
	for _, p := range strings.Split(key, ".") {
		name, idx, ok := strings.Cut(p, "[")
		parts = append(parts, name)
		if ok {
			parts = append(parts, "["+idx)
		}
	}
	return parts
}

// TestKeysAreCaseSensitive: a key that differs from a known one only in
// case is unknown (found by FuzzLoad: go-toml matched it to the field).
func TestKeysAreCaseSensitive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.toml")
	if err := os.WriteFile(path, []byte("hostname = \"b.test\"\nrelAY_networks = [\"10.0.0.0/8\"]\n[SMTP]\nlisten = []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), `relay.toml:2: unknown key "relAY_networks"`) || !strings.Contains(err.Error(), `relay.toml:3: unknown key "SMTP"`) {
		t.Fatalf("Load = %v", err)
	}
}

func TestLoadSmarthostRoute(t *testing.T) {
	path := writeConfig(t, `data_dir = "d"
[queue]
max_message_rate = "600/m"
[[route]]
domain = "*"
to = ["smtp.example.net:587", "backup.example.net:587", "mx.example.net"]
auth_user = "relay@example.net"
auth_password_file = "smarthost.pw"
tls_ca_file = "/etc/ssl/provider.pem"
tls_server_name = "SMTP.example.net"
source_ip = "192.0.2.10"
ehlo_name = "out1.example.org"
max_message_rate = "20/s"
per_hop_concurrency = 2
max_messages_per_connection = 100
[[route]]
domain = "s.test"
to = "smtps.example.net:465"
auth_user = "u"
auth_password_file = "/pw"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.MaxMessageRate != (Rate{N: 600, Per: time.Minute}) {
		t.Errorf("queue rate %v", c.Queue.MaxMessageRate)
	}
	rt := c.Routes[0]
	want := []RouteHost{{"smtp.example.net", 587, false}, {"backup.example.net", 587, false}, {"mx.example.net", 25, true}}
	if !reflect.DeepEqual(rt.Hosts, want) || rt.Host != "smtp.example.net" || rt.Port != 587 {
		t.Errorf("hosts %+v (first %s:%d)", rt.Hosts, rt.Host, rt.Port)
	}
	if rt.TLS != TLSRequire || rt.AuthUser != "relay@example.net" || rt.AuthPasswordFile != filepath.Join(c.DataDir, "smarthost.pw") ||
		rt.TLSCAFile != "/etc/ssl/provider.pem" || rt.TLSServerName != "smtp.example.net" || rt.SourceIP.String() != "192.0.2.10" ||
		rt.EHLOName != "out1.example.org" || rt.MaxMessageRate != (Rate{N: 20, Per: time.Second}) || rt.PerHopConcurrency != 2 || rt.MaxMessagesPerConnection != 100 {
		t.Errorf("route %+v", rt)
	}
	if c.Routes[1].TLS != TLSImplicit {
		t.Errorf("AUTH on port 465: tls = %s, want implicit", c.Routes[1].TLS)
	}
}
