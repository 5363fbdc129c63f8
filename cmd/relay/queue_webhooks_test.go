package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
)

func TestQueueStatsShowsWebhookBacklog(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	next := now.Add(40 * time.Second)
	var b bytes.Buffer
	printWebhooks(&b, []api.Webhook{
		{Name: "crm", URL: "http://127.0.0.1:8080/events", Backlog: 12, OldestAgeSeconds: 185, Posted: 3, Failures: 4,
			LastError: "dial tcp 127.0.0.1:8080: connect: connection refused", NextAttempt: &next},
		{Name: "audit", URL: "https://audit.test/in", Posted: 90},
	}, now)
	want := `webhooks, events waiting to be posted:
       12  crm http://127.0.0.1:8080/events, oldest 3m05s ago; 3 posted
           failing (4 rounds): dial tcp 127.0.0.1:8080: connect: connection refused; next try in 40s
        0  audit https://audit.test/in; 90 posted
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	printWebhooks(&b, nil, now)
	if b.Len() != 0 {
		t.Errorf("no webhooks printed %q", b.String())
	}
}
