package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
)

func TestQueueOutputShowsLevels(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	by := now.Add(5 * time.Minute)
	m := api.Message{ID: "0123456789ABC", From: "s@a.test", Created: now.Add(-time.Minute), Priority: 9, DeliverBy: &by, ByMode: "N", RequireTLS: true,
		Recipients: []api.Recipient{{Address: "u@c.test", Status: api.StatusPending}}}
	var b bytes.Buffer
	writeList(&b, []api.Message{m}, now)
	if !strings.Contains(b.String(), "[prio +9, by 12:05:00Z N, requiretls]") {
		t.Errorf("list:\n%s", b.String())
	}
	b.Reset()
	writeShow(&b, &m, now)
	want := "  service:   MT-PRIORITY +9; deliver by 2026-11-21 12:05:00Z (in 5m00s), then the sender is notified; REQUIRETLS: only over verified TLS\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("show:\n%s\nwant the line\n%s", b.String(), want)
	}
	t.Logf("list:\n%s", func() string { var x bytes.Buffer; writeList(&x, []api.Message{m}, now); return x.String() }())
}

// queue show names the TLS policy of each recipient's last attempt: the
// one a delivery went under, or the one that deferred it.
func TestQueueShowTLSPolicy(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	m := api.Message{ID: "0123456789ABC", From: "s@a.test", Created: now.Add(-time.Minute),
		Recipients: []api.Recipient{
			{Index: 0, Address: "u@dane.test", Status: api.StatusDelivered, LastReply: "250 2.0.0 OK"},
			{Index: 1, Address: "u@sts.test", Status: api.StatusDeferred, LastReply: "451 4.7.4 MTA-STS enforce policy of sts.test: 192.0.2.1:25 (mx.sts.test) does not offer STARTTLS"},
			{Index: 2, Address: "u@plain.test", Status: api.StatusDelivered, LastReply: "250 2.0.0 OK"},
			{Index: 3, Address: "u@route.test", Status: api.StatusDelivered, LastReply: "250 2.0.0 OK"},
		},
		Events: []api.Event{
			{At: now, Kind: "delivered", Recipient: "u@dane.test", Text: "relay=192.0.2.2:25 (policy DANE) 250 2.0.0 OK"},
			{At: now, Kind: "deferred", Recipient: "u@sts.test", Text: "451 4.7.4 MTA-STS enforce policy of sts.test: ..."},
			{At: now, Kind: "delivered", Recipient: "u@plain.test", Text: "relay=192.0.2.3:25 (policy none) 250 2.0.0 OK"},
			{At: now, Kind: "delivered", Recipient: "u@route.test", Text: "relay=192.0.2.4:25 250 2.0.0 OK"},
		}}
	var b bytes.Buffer
	writeShow(&b, &m, now)
	out := b.String()
	for _, want := range []string{
		"[0] u@dane.test: delivered, 0 attempts\n      last reply:   250 2.0.0 OK\n      tls policy:   DANE\n",
		"      tls policy:   MTA-STS enforce of sts.test: not met, deferred (see last reply)\n",
		"[2] u@plain.test: delivered, 0 attempts\n      last reply:   250 2.0.0 OK\n      tls policy:   none\n",
		"[3] u@route.test: delivered, 0 attempts\n      last reply:   250 2.0.0 OK\nHistory:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
}
