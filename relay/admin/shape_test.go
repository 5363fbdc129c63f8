package admin

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/spool"
)

// TestShape: GET /v1/shape counts the recipients still to deliver by
// destination domain (the first hop of a source route) or next hop, and
// by the age of their message in qshape's buckets, the most loaded
// destination first; held messages only when asked.
func TestShape(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	put := func(age time.Duration, held bool, to ...string) {
		t.Helper()
		rs := make([]spool.Recipient, len(to))
		for i, r := range to {
			rs[i] = spool.Recipient{To: r}
		}
		env := spool.Envelope{From: "<s@a.test>", Received: now.Add(-age), Held: held}
		if _, err := f.sp.Enqueue(context.Background(), env, rs, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	put(time.Minute, false, "<u1@c.test>", "<u2@C.test>")
	put(7*time.Minute, false, "<u3@c.test>", "<u@d.test>")
	put(30*time.Minute, false, "<@relay.test:u@x.test>")
	put(500*time.Minute, false, "<u4@c.test>")
	put(2*time.Minute, true, "<u5@d.test>", "<u6@d.test>", "<u7@d.test>")

	sh, err := f.cl.Shape(context.Background(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	want := &api.Shape{By: "domain", Buckets: []string{"0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320m+"},
		Total: api.ShapeRow{Destination: "TOTAL", Total: 6, Counts: []int{2, 2, 0, 1, 0, 0, 0, 1}},
		Rows: []api.ShapeRow{
			{Destination: "c.test", Total: 4, Counts: []int{2, 1, 0, 0, 0, 0, 0, 1}},
			{Destination: "d.test", Total: 1, Counts: []int{0, 1, 0, 0, 0, 0, 0, 0}},
			{Destination: "relay.test", Total: 1, Counts: []int{0, 0, 0, 1, 0, 0, 0, 0}},
		}}
	if !reflect.DeepEqual(sh, want) {
		t.Errorf("shape:\n%+v\nwant\n%+v", sh, want)
	}

	sh, err = f.cl.Shape(context.Background(), api.ShapeByHop, true)
	if err != nil {
		t.Fatal(err)
	}
	if sh.Total.Total != 9 || len(sh.Rows) == 0 || sh.Rows[0].Destination != "smtp:d.test" || sh.Rows[0].Total != 4 || !sh.Held {
		t.Errorf("by hop, held too: %+v", sh)
	}
	if _, err := f.cl.Shape(context.Background(), "sender", false); err == nil {
		t.Error("by=sender accepted")
	}
}
