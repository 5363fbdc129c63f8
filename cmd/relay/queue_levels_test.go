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
