package admin

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/spool"
)

// TestListShowsLevels: list and show carry each message's MT-PRIORITY,
// BY deadline and REQUIRETLS, taken from its MAIL parameters.
func TestListShowsLevels(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id, err := f.sp.Enqueue(ctx, spool.Envelope{From: "<s@a.test>", MailParams: " MT-PRIORITY=7 BY=300;R REQUIRETLS"},
		[]spool.Recipient{{To: "<u@c.test>"}}, []byte("Subject: x\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	plain := f.enqueue("<s@a.test>", "<v@c.test>")
	msgs, err := f.cl.List(ctx, api.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		switch m.ID {
		case id:
			if m.Priority != 7 || m.DeliverBy == nil || !m.DeliverBy.Equal(m.Created.Add(300*time.Second)) || m.ByMode != "R" || !m.RequireTLS {
				t.Errorf("list of the levelled message: priority %d, deliver_by %v, by_mode %q, require_tls %v", m.Priority, m.DeliverBy, m.ByMode, m.RequireTLS)
			}
		case plain:
			if m.Priority != 0 || m.DeliverBy != nil || m.ByMode != "" || m.RequireTLS {
				t.Errorf("list of a plain message: %+v", m)
			}
		}
	}
	m, err := f.cl.Show(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Priority != 7 || m.DeliverBy == nil || !m.RequireTLS {
		t.Errorf("show: %+v", m)
	}
	_, v := f.get("/v1/messages/" + id)
	if o := v.(map[string]any); o["priority"] != 7.0 || o["by_mode"] != "R" || o["require_tls"] != true || o["deliver_by"] == nil {
		t.Errorf("JSON %v", o)
	}
}

// TestMetricsLevels: deliveries by priority and BY deadline misses.
func TestMetricsLevels(t *testing.T) {
	m := NewMetrics(MetricsOptions{})
	m.Levels(spool.StatusDelivered, 9, "", false)
	m.Levels(spool.StatusDelivered, 0, "R", false)
	m.Levels(spool.StatusFailed, -3, "R", true)
	m.Levels(spool.StatusDelivered, 0, "N", true)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`relay_deliveries_by_priority_total{priority="9",result="delivered"} 1`,
		`relay_deliveries_by_priority_total{priority="0",result="delivered"} 2`,
		`relay_deliveries_by_priority_total{priority="-3",result="failed"} 1`,
		`relay_deliver_by_misses_total{mode="R"} 1`,
		`relay_deliver_by_misses_total{mode="N"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
