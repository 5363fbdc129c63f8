package deliver

import (
	"net"
	"strings"
	"testing"

	"github.com/relay-mta/relay/queue"
)

// TestDeliverREQUIRETLS checks RFC 8689 at the Deliverer: a REQUIRETLS
// message goes only over verified TLS to a hop that offers REQUIRETLS,
// carries the parameter on, and is otherwise refused for every recipient
// with 5.7.30 before anything of it is sent.
func TestDeliverREQUIRETLS(t *testing.T) {
	cert, pool := selfSigned(t)
	_, otherPool := selfSigned(t)
	plain := startSMTPD(t, "127.0.25.191", nil)
	secure := startSMTPD(t, "127.0.25.192", &cert)
	res := &fakeResolver{
		mx:    map[string][]*net.MX{"tls.test": {{Host: "mx.test.", Pref: 10}}},
		hosts: map[string][]string{"mx.test": {"127.0.25.192"}},
	}
	msg := testMessage("R1", "<s@a.test>", "REQUIRETLS")
	tlsHop := func(mode string) queue.Hop {
		return queue.Hop{Key: "mx:tls.test", MX: "tls.test", Port: secure.port, TLS: mode}
	}

	t.Run("plaintext hop", func(t *testing.T) {
		for _, mode := range []string{"opportunistic", "none"} {
			s := mustDial(t, testDeliverer(nil, pool), queue.Hop{Key: "k", Addrs: []string{plain.addr}, TLS: mode})
			checkReplies(t, mustSend(t, s, msg, "<u@c.test>", "<v@c.test>"), "550 5.7.30", "550 5.7.30")
			// The same session still carries ordinary mail.
			checkReplies(t, mustSend(t, s, testMessage("P1", "<s@a.test>", ""), "<u@c.test>"), "250 ")
		}
		if cmds := plain.tap.commands(); strings.Count(cmds, "MAIL FROM") != 2 || strings.Contains(cmds, "REQUIRETLS") {
			t.Errorf("the plaintext hop saw:\n%s", cmds)
		}
	})
	t.Run("tls with a certificate that does not verify", func(t *testing.T) {
		s := mustDial(t, testDeliverer(res, otherPool), tlsHop("opportunistic"))
		if s.tls == nil {
			t.Fatal("no TLS")
		}
		checkReplies(t, mustSend(t, s, msg, "<u@tls.test>"), "550 5.7.30")
	})
	_, _, earlier := secure.b.snapshot()
	before := len(earlier)
	t.Run("verified tls, tls = require", func(t *testing.T) {
		s := mustDial(t, testDeliverer(res, pool), tlsHop("require"))
		checkReplies(t, mustSend(t, s, msg, "<u@tls.test>"), "250 ")
	})
	t.Run("verified tls, opportunistic", func(t *testing.T) {
		s := mustDial(t, testDeliverer(res, pool), tlsHop("opportunistic"))
		checkReplies(t, mustSend(t, s, msg, "<u@tls.test>"), "250 ")
	})
	_, _, msgs := secure.b.snapshot()
	if len(msgs)-before != 2 {
		t.Fatalf("the TLS hop got %d messages, want 2", len(msgs)-before)
	}
	for _, m := range msgs[before:] {
		if !m.tls || !m.params.RequireTLS {
			t.Errorf("the TLS hop got tls=%v REQUIRETLS=%v, want both", m.tls, m.params.RequireTLS)
		}
	}
}
