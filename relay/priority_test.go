package relay

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd"
)

// TestMTPriorityTrust: RFC 6710 §4. A priority from a client that is
// neither in relay_networks nor authenticated is reset to 0 unless
// smtp.mt_priority_untrusted = "keep"; trusted clients keep theirs.
func TestMTPriorityTrust(t *testing.T) {
	cases := []struct {
		name    string
		policy  config.PriorityPolicy
		network bool // client in relay_networks
		auth    bool
		want    int8
	}{
		{"untrusted, reset", config.PriorityReset, false, false, 0},
		{"untrusted, keep", config.PriorityKeep, false, false, 7},
		{"relay network", config.PriorityReset, true, false, 7},
		{"authenticated", config.PriorityReset, false, true, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.SMTP.MTPriorityUntrusted = tc.policy
			if tc.network {
				cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
			}
			r, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.spool.Close() })
			ss, err := backend{r: r}.NewSession(smtpd.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 4000}})
			if err != nil {
				t.Fatal(err)
			}
			s := ss.(*session)
			if tc.auth {
				if err := s.Auth("", "alice", "pw-alice"); err != nil {
					t.Fatal(err)
				}
			}
			from, err := envelope.ParseReversePath("<alice@b.test>", false)
			if err != nil {
				t.Fatal(err)
			}
			p, err := envelope.ParseMailParams("MT-PRIORITY=7 BY=60;N")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Mail(from, p); err != nil {
				t.Fatal(err)
			}
			if s.params.Priority != tc.want || s.params.ByTime != 60 {
				t.Errorf("stored priority %d (BY %d), want %d (BY kept)", s.params.Priority, s.params.ByTime, tc.want)
			}
		})
	}
}
