package relay

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/config"
)

// routeTOML is loaded through config.Load, so that names are normalised the
// way the daemon sees them: mixed case and trailing dots in the file must
// not matter.
const routeTOML = `
hostname       = "B.Test."
aliases        = ["mx.b.test", "[127.0.0.2]"]
local_domains  = ["b.test", "Local.Test."]
route_literals = true

[[route]]
domain = "C.Test."
to     = "127.0.0.3:2525"

[[route]]
domain = "*.corp.test"
to     = "[::1]:2526"
tls    = "require"

[[route]]
domain = "*.eu.corp.test"
to     = "GW.eu.test"

[[route]]
domain = "exact.corp.test"
to     = "127.0.0.4:25"
tls    = "none"

[[route]]
domain = "named.test"
to     = "relay.example.test:2527"
`

// loadRouteConfig loads routeTOML with top-level keys top before it and
// tables after it.
func loadRouteConfig(t *testing.T, top, tables string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.toml")
	if err := os.WriteFile(path, []byte(top+routeTOML+tables), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// routeCase is one Route call: either a hop and rcptOut, or a permanent
// error code (wantCode), or any error (wantErr).
type routeCase struct {
	to       string
	hop      queue.Hop
	rcptOut  string
	wantCode int
}

func runRouteCases(t *testing.T, r *Router, cases []routeCase) {
	t.Helper()
	for _, tc := range cases {
		hop, out, err := r.Route(tc.to)
		if tc.wantCode != 0 {
			var pe *queue.PermanentError
			if !errors.As(err, &pe) || pe.Code != tc.wantCode {
				t.Errorf("Route(%q) = %+v, %q, %v; want PermanentError %d", tc.to, hop, out, err, tc.wantCode)
			}
			if _, ok := err.(*queue.PermanentError); !ok {
				t.Errorf("Route(%q): error %T is not a *queue.PermanentError at the top", tc.to, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Route(%q): %v", tc.to, err)
			continue
		}
		if !reflect.DeepEqual(hop, tc.hop) || out != tc.rcptOut {
			t.Errorf("Route(%q) =\n  %+v, %q\nwant\n  %+v, %q", tc.to, hop, out, tc.hop, tc.rcptOut)
		}
	}
}

func local(mailbox, source string) queue.Hop {
	return queue.Hop{Key: "local", Local: true, Mailbox: mailbox, Source: source}
}

func mxHop(name, source string) queue.Hop {
	return queue.Hop{Key: "mx:" + name + ":25", MX: name, Port: 25, TLS: "opportunistic", Source: source}
}

var (
	cHop = queue.Hop{Key: "smtp:127.0.0.3:2525", Addrs: []string{"127.0.0.3:2525"}, TLS: "opportunistic", Source: "route c.test"}
	// corpHop is the *.corp.test route: IPv6 in brackets, and a TLS
	// policy other than the default in the lane key.
	corpHop = queue.Hop{Key: "smtp:[::1]:2526;tls=require", Addrs: []string{"[::1]:2526"}, TLS: "require", Source: "route *.corp.test"}
)

func TestRoute(t *testing.T) {
	r := NewRouter(loadRouteConfig(t, "", ""))
	runRouteCases(t, r, []routeCase{
		// <postmaster> without a domain is always ours (RFC 5321 §4.5.1).
		{to: "<postmaster>", hop: local("postmaster", "postmaster"), rcptOut: "<postmaster>"},
		{to: "<PostMaster>", hop: local("postmaster", "postmaster"), rcptOut: "<PostMaster>"},

		// Local domains, whatever their case in the file or the address.
		{to: "<User@B.TEST>", hop: local("user", "local domain b.test"), rcptOut: "<User@B.TEST>"},
		{to: "<u@local.test>", hop: local("u", "local domain local.test"), rcptOut: "<u@local.test>"},
		{to: `<"A b"@local.test>`, hop: local("a b", "local domain local.test"), rcptOut: `<"A b"@local.test>`},

		// Exact route; the file wrote "C.Test.".
		{to: "<u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
		{to: "<u@C.TEST>", hop: cHop, rcptOut: "<u@C.TEST>"},
		// "*.corp.test" matches sub-domains at any depth, not corp.test.
		{to: "<u@x.corp.test>", hop: corpHop, rcptOut: "<u@x.corp.test>"},
		{to: "<u@a.b.CORP.test>", hop: corpHop, rcptOut: "<u@a.b.CORP.test>"},
		{to: "<u@corp.test>", hop: mxHop("corp.test", "mx corp.test"), rcptOut: "<u@corp.test>"},
		// The longest "*.parent" wins; its target is a bare name: MX.
		{to: "<u@x.eu.corp.test>", hop: queue.Hop{Key: "mx:gw.eu.test:25", MX: "gw.eu.test", Port: 25, TLS: "opportunistic", Source: "route *.eu.corp.test"}, rcptOut: "<u@x.eu.corp.test>"},
		// An exact entry beats every wildcard.
		{to: "<u@exact.corp.test>", hop: queue.Hop{Key: "smtp:127.0.0.4:25;tls=none", Addrs: []string{"127.0.0.4:25"}, TLS: "none", Source: "route exact.corp.test"}, rcptOut: "<u@exact.corp.test>"},
		// A name with a port is an address, resolved by the Deliverer.
		{to: "<u@named.test>", hop: queue.Hop{Key: "smtp:relay.example.test:2527", Addrs: []string{"relay.example.test:2527"}, TLS: "opportunistic", Source: "route named.test"}, rcptOut: "<u@named.test>"},
		// No route: the domain's MX.
		{to: "<u@Example.ORG>", hop: mxHop("example.org", "mx example.org"), rcptOut: "<u@Example.ORG>"},

		// Address literals: that address on port 25; ours is local.
		{to: "<u@[192.0.2.1]>", hop: queue.Hop{Key: "smtp:192.0.2.1:25", Addrs: []string{"192.0.2.1:25"}, TLS: "opportunistic", Source: "address literal [192.0.2.1]"}, rcptOut: "<u@[192.0.2.1]>"},
		{to: "<u@[IPv6:2001:DB8::1]>", hop: queue.Hop{Key: "smtp:[2001:db8::1]:25", Addrs: []string{"[2001:db8::1]:25"}, TLS: "opportunistic", Source: "address literal [IPv6:2001:db8::1]"}, rcptOut: "<u@[IPv6:2001:DB8::1]>"},
		{to: "<U@[127.0.0.2]>", hop: local("u", "local domain [127.0.0.2]"), rcptOut: "<U@[127.0.0.2]>"},
		{to: "<u@[x400:c=fr]>", wantCode: 550},

		// Source routes, followed (the default): our names are removed,
		// the next one is the hop and stays at the head of the route.
		{to: "<@b.test,@c.test:u@d.test>", hop: withSource(cHop, "source route, route c.test"), rcptOut: "<@c.test:u@d.test>"},
		{to: "<@B.TEST,@MX.b.test,@c.test,@e.test:u@d.test>", hop: withSource(cHop, "source route, route c.test"), rcptOut: "<@c.test,@e.test:u@d.test>"},
		{to: "<@b.test,@mx.b.test:u@b.test>", hop: local("u", "local domain b.test"), rcptOut: "<u@b.test>"},
		{to: "<@b.test:u@example.org>", hop: mxHop("example.org", "mx example.org"), rcptOut: "<u@example.org>"},
		{to: "<@other.test:u@b.test>", hop: mxHop("other.test", "source route, mx other.test"), rcptOut: "<@other.test:u@b.test>"},
		{to: "<@x.corp.test:u@d.test>", hop: withSource(corpHop, "source route, route *.corp.test"), rcptOut: "<@x.corp.test:u@d.test>"},
		// A literal hop (route_literals = true here); our own literal is
		// stripped like a name.
		{to: "<@[127.0.0.3]:u@d.test>", hop: queue.Hop{Key: "smtp:127.0.0.3:25", Addrs: []string{"127.0.0.3:25"}, TLS: "opportunistic", Source: "source route, address literal [127.0.0.3]"}, rcptOut: "<@[127.0.0.3]:u@d.test>"},
		{to: "<@[127.0.0.2]:u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},

		// Not a path: permanent, 553.
		{to: "u@d.test", wantCode: 553},
		{to: "<u@@d.test>", wantCode: 553},
		{to: "<u@d.test.>", wantCode: 553}, // RFC 5321 has no root label in a path
		{to: "<>", wantCode: 553},
	})
}

func withSource(h queue.Hop, source string) queue.Hop {
	h.Source = source
	return h
}

func TestRouteLiteralTableEntry(t *testing.T) {
	cfg := loadRouteConfig(t, "", "")
	// The file format only takes domains; a literal entry can still be
	// built by hand, and it is found however the literal is written.
	cfg.Routes = append(cfg.Routes,
		config.Route{Domain: "[127.0.0.9]", To: "127.0.0.10:2525", Host: "127.0.0.10", Port: 2525, TLS: config.TLSNone},
		config.Route{Domain: "[ipv6:2001:db8:0::9]", To: "[::1]:2525", Host: "::1", Port: 2525},
	)
	r := NewRouter(cfg)
	hop9 := queue.Hop{Key: "smtp:127.0.0.10:2525;tls=none", Addrs: []string{"127.0.0.10:2525"}, TLS: "none", Source: "route [127.0.0.9]"}
	hop6 := queue.Hop{Key: "smtp:[::1]:2525", Addrs: []string{"[::1]:2525"}, TLS: "opportunistic", Source: "route [IPv6:2001:db8::9]"}
	runRouteCases(t, r, []routeCase{
		{to: "<u@[127.0.0.9]>", hop: hop9, rcptOut: "<u@[127.0.0.9]>"},
		{to: "<@[127.0.0.9]:u@d.test>", hop: withSource(hop9, "source route, route [127.0.0.9]"), rcptOut: "<@[127.0.0.9]:u@d.test>"},
		{to: "<u@[IPv6:2001:db8::9]>", hop: hop6, rcptOut: "<u@[IPv6:2001:db8::9]>"},
	})
}

func TestRouteLiteralsOff(t *testing.T) {
	cfg := loadRouteConfig(t, "", "")
	cfg.RouteLiterals = false
	r := NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<@[127.0.0.3]:u@d.test>", wantCode: 550},
		{to: "<@b.test,@[192.0.2.1]:u@d.test>", wantCode: 550},
		// Our own literal is no hop, so it needs no permission.
		{to: "<@[127.0.0.2]:u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
		// route_literals is about source routes; a literal domain routes.
		{to: "<u@[192.0.2.1]>", hop: queue.Hop{Key: "smtp:192.0.2.1:25", Addrs: []string{"192.0.2.1:25"}, TLS: "opportunistic", Source: "address literal [192.0.2.1]"}, rcptOut: "<u@[192.0.2.1]>"},
	})
}

func TestRouteSourceRoutesStrip(t *testing.T) {
	cfg := loadRouteConfig(t, `source_routes = "strip"`+"\n", "")
	r := NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<@b.test,@c.test:u@example.org>", hop: mxHop("example.org", "mx example.org"), rcptOut: "<u@example.org>"},
		{to: "<@other.test:u@B.test>", hop: local("u", "local domain b.test"), rcptOut: "<u@B.test>"},
		{to: "<@x.test,@y.test:u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
		// route_literals only matters for hops that are followed.
		{to: "<@[192.0.2.1]:u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
	})
}

func TestRouteSourceRoutesReject(t *testing.T) {
	cfg := loadRouteConfig(t, `source_routes = "reject"`+"\n", "")
	r := NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<@c.test:u@d.test>", wantCode: 550},
		{to: "<@b.test,@c.test:u@d.test>", wantCode: 550},
		// Only our own names: no route is left to refuse.
		{to: "<@b.test:u@d.test>", hop: mxHop("d.test", "mx d.test"), rcptOut: "<u@d.test>"},
		{to: "<u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
	})
}

func TestRouteStar(t *testing.T) {
	cfg := loadRouteConfig(t, "", `
[[route]]
domain = "*"
to     = "smarthost.test"
tls    = "require"
`)
	r := NewRouter(cfg)
	star := queue.Hop{Key: "mx:smarthost.test:25;tls=require", MX: "smarthost.test", Port: 25, TLS: "require", Source: "route *"}
	runRouteCases(t, r, []routeCase{
		{to: "<u@anything.test>", hop: star, rcptOut: "<u@anything.test>"},
		{to: "<u@corp.test>", hop: star, rcptOut: "<u@corp.test>"},
		{to: "<@other.test:u@d.test>", hop: withSource(star, "source route, route *"), rcptOut: "<@other.test:u@d.test>"},
		// More specific entries still win.
		{to: "<u@c.test>", hop: cHop, rcptOut: "<u@c.test>"},
		{to: "<u@x.corp.test>", hop: corpHop, rcptOut: "<u@x.corp.test>"},
		// Local domains never go through the table.
		{to: "<u@b.test>", hop: local("u", "local domain b.test"), rcptOut: "<u@b.test>"},
		// "*" is every domain; a literal names its own destination.
		{to: "<u@[192.0.2.1]>", hop: queue.Hop{Key: "smtp:192.0.2.1:25", Addrs: []string{"192.0.2.1:25"}, TLS: "opportunistic", Source: "address literal [192.0.2.1]"}, rcptOut: "<u@[192.0.2.1]>"},
	})
}

// Domains routed to the same place share one lane.
func TestRouteSharedLane(t *testing.T) {
	cfg := loadRouteConfig(t, "", `
[[route]]
domain = "d1.test"
to     = "127.0.0.3:2525"

[[route]]
domain = "d2.test"
to     = "gw.eu.test"
`)
	r := NewRouter(cfg)
	key := func(to string) string {
		hop, _, err := r.Route(to)
		if err != nil {
			t.Fatal(err)
		}
		return hop.Key
	}
	if a, b := key("<u@c.test>"), key("<u@d1.test>"); a != b {
		t.Errorf("c.test and d1.test both go to 127.0.0.3:2525 but have lanes %q and %q", a, b)
	}
	if a, b := key("<u@x.eu.corp.test>"), key("<u@d2.test>"); a != b {
		t.Errorf("*.eu.corp.test and d2.test both go to MX gw.eu.test but have lanes %q and %q", a, b)
	}
	if a, b := key("<u@gw.eu.test>"), key("<u@d2.test>"); a != b {
		t.Errorf("gw.eu.test by MX and d2.test via MX gw.eu.test have lanes %q and %q", a, b)
	}
}

func TestRoutePercentHack(t *testing.T) {
	cfg := loadRouteConfig(t, "percent_hack = true\n", "")
	r := NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<u%example.org@b.test>", hop: mxHop("example.org", "mx example.org"), rcptOut: "<u@example.org>"},
		{to: "<u%c.test@MX.B.TEST>", hop: cHop, rcptOut: "<u@c.test>"},
		// Peeled while the domain is ours.
		{to: "<u%c.test%b.test@b.test>", hop: cHop, rcptOut: "<u@c.test>"},
		// Only for our domains: elsewhere '%' is just a character.
		{to: "<u%b.test@example.org>", hop: mxHop("example.org", "mx example.org"), rcptOut: "<u%b.test@example.org>"},
	})

	cfg.PercentHack = false
	r = NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<u%example.org@b.test>", hop: local("u%example.org", "local domain b.test"), rcptOut: "<u%example.org@b.test>"},
	})
}

// A hand-built Config (no config.Load) gets the same matching: route
// domains are normalised by NewRouter too, and a zero SourceRoutes and TLS
// mean the defaults.
func TestRouteHandBuiltConfig(t *testing.T) {
	cfg := &config.Config{
		Hostname: "b.test",
		Routes: []config.Route{
			{Domain: "C.Test.", Host: "127.0.0.3", Port: 2525},
			{Domain: "*.Corp.Test.", Host: "gw.test", MX: true},
		},
	}
	r := NewRouter(cfg)
	runRouteCases(t, r, []routeCase{
		{to: "<@b.test,@c.test:u@d.test>", hop: queue.Hop{Key: "smtp:127.0.0.3:2525", Addrs: []string{"127.0.0.3:2525"}, TLS: "opportunistic", Source: "source route, route c.test"}, rcptOut: "<@c.test:u@d.test>"},
		{to: "<u@x.corp.test>", hop: queue.Hop{Key: "mx:gw.test:25", MX: "gw.test", Port: 25, TLS: "opportunistic", Source: "route *.corp.test"}, rcptOut: "<u@x.corp.test>"},
	})
}

func TestRouteConcurrent(t *testing.T) {
	r := NewRouter(loadRouteConfig(t, "", ""))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, _, err := r.Route("<@b.test,@c.test:u@x.corp.test>"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestRouteUnknownLocalUser: mail made inside the relay (a DSN, say) for
// a local user who does not exist fails instead of filling a mailbox
// nobody can read; postmaster always exists.
func TestRouteUnknownLocalUser(t *testing.T) {
	cfg := config.Default()
	cfg.LocalDomains = []string{"b.test"}
	r := NewRouter(cfg)
	r.UserExists = func(name string) bool { return name == "alice" }
	if hop, _, err := r.Route("<Alice@b.test>"); err != nil || !hop.Local || hop.Mailbox != "alice" {
		t.Errorf("alice: %+v, %v", hop, err)
	}
	if hop, _, err := r.Route("<postmaster@b.test>"); err != nil || hop.Mailbox != "postmaster" {
		t.Errorf("postmaster: %+v, %v", hop, err)
	}
	_, _, err := r.Route("<carol@b.test>")
	var pe *queue.PermanentError
	if !errors.As(err, &pe) || pe.Code != 550 || !strings.Contains(err.Error(), "5.1.1") {
		t.Errorf("carol: %v, want a permanent 550 5.1.1", err)
	}
}

// TestRouteMXPort: [dns] mx_port moves the default route's MX deliveries
// (and their lane) to another port.
func TestRouteMXPort(t *testing.T) {
	cfg := loadRouteConfig(t, "", "")
	cfg.Routes = nil
	cfg.DNS.MXPort = 2525
	runRouteCases(t, NewRouter(cfg), []routeCase{
		{to: "<u@example.org>", hop: queue.Hop{Key: "mx:example.org:2525", MX: "example.org", Port: 2525, TLS: "opportunistic", Source: "mx example.org"}, rcptOut: "<u@example.org>"},
	})
}
