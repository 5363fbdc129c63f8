package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/spool"
)

// testQueue is the real queue (not running: the test is the scheduler)
// with its Notify and Revive calls counted.
type testQueue struct {
	*queue.Queue
	notified, revived int
}

func (q *testQueue) Notify() { q.notified++ }
func (q *testQueue) Revive() { q.revived++ }

type fixture struct {
	t   *testing.T
	sp  *spool.Spool
	q   *testQueue
	cl  *client.Admin
	raw *http.Client
}

func newFixture(t *testing.T) *fixture { t.Helper(); return newFixtureWith(t, nil) }

// newFixtureWith is newFixture with adjust applied to the server's
// Options before it starts.
func newFixtureWith(t *testing.T, adjust func(*Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1, History: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	q := &testQueue{Queue: queue.New(queue.Options{Spool: sp})}
	o := Options{
		Spool: sp, Queue: q,
		NextHop: func(to string) string { return "smtp:" + to[strings.IndexByte(to, '@')+1:len(to)-1] },
		Retry:   queue.RetryPolicy{Min: time.Minute, Max: time.Hour, Lifetime: 5 * 24 * time.Hour},
		Metrics: NewMetrics(MetricsOptions{Spool: sp}).Handler(),
	}
	if adjust != nil {
		adjust(&o)
	}
	srv := New(o)
	sock := filepath.Join(dir, "admin.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &fixture{t: t, sp: sp, q: q, cl: client.NewAdmin(sock), raw: raw}
}

func (f *fixture) enqueue(from string, to ...string) string {
	f.t.Helper()
	rs := make([]spool.Recipient, len(to))
	for i, r := range to {
		rs[i] = spool.Recipient{To: r}
	}
	id, err := f.sp.Enqueue(context.Background(), spool.Envelope{From: from, Client: "127.0.0.1", Helo: "a.test"}, rs,
		[]byte("Received: from a.test\r\nSubject: hello\r\n\r\nbody\r\n"))
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// get fetches path from the socket and decodes it into a generic value,
// the way a script in another language would see the JSON.
func (f *fixture) get(path string) (int, any) {
	f.t.Helper()
	resp, err := f.raw.Get("http://relay" + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		f.t.Fatalf("GET %s: not JSON: %v\n%s", path, err, b)
	}
	return resp.StatusCode, v
}

func TestListenSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v; want a socket with mode 0600", fi.Mode(), err)
	}
	go http.Serve(l, http.NotFoundHandler())
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	l.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	// A socket left by a daemon that died is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
	// Anything else in the way is left alone.
	os.WriteFile(sock, []byte("x"), 0o600)
	if _, err := Listen(sock); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary directories left behind: %v", ents)
	}
}

// TestListJSON checks the list against docs/design.md §13 as a script sees it.
func TestListJSON(t *testing.T) {
	f := newFixture(t)
	a := f.enqueue("<sender@a.test>", "<alice@c.test>", "<bob@d.test>")
	f.enqueue("<>", "<carol@c.test>")
	if _, err := f.sp.Record(context.Background(), a, []spool.Result{
		{Rcpt: 0, Status: spool.StatusDeferred, Reply: "451 4.4.1 connection refused", NextAttempt: time.Now().Add(time.Minute)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	code, v := f.get("/v1/messages")
	list, ok := v.([]any)
	if code != 200 || !ok || len(list) != 2 {
		t.Fatalf("list: %d %v", code, v)
	}
	m := list[0].(map[string]any)
	for _, k := range []string{"id", "from", "created", "held", "recipients"} {
		if _, ok := m[k]; !ok {
			t.Errorf("message lacks %q: %v", k, m)
		}
	}
	if m["id"] != a || m["from"] != "sender@a.test" || m["held"] != false {
		t.Errorf("message %v", m)
	}
	if _, err := time.Parse(time.RFC3339, m["created"].(string)); err != nil {
		t.Errorf("created: %v", err)
	}
	r0 := m["recipients"].([]any)[0].(map[string]any)
	for _, k := range []string{"address", "status", "attempts", "next_attempt", "last_reply"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("recipient lacks %q: %v", k, r0)
		}
	}
	if r0["address"] != "alice@c.test" || r0["status"] != "deferred" || r0["attempts"] != 1.0 || r0["last_reply"] != "451 4.4.1 connection refused" {
		t.Errorf("recipient %v", r0)
	}
	if _, err := time.Parse(time.RFC3339, r0["next_attempt"].(string)); err != nil {
		t.Errorf("next_attempt: %v", err)
	}
	if m1 := list[1].(map[string]any); m1["from"] != "" {
		t.Errorf("null reverse path shown as %v", m1["from"])
	}

	ctx := context.Background()
	for _, c := range []struct {
		f    api.Filter
		want int
	}{
		{api.Filter{}, 2},
		{api.Filter{From: "SENDER@"}, 1},
		{api.Filter{To: "carol"}, 1},
		{api.Filter{Status: "deferred"}, 1},
		{api.Filter{Status: "pending"}, 2},
		{api.Filter{Status: "held"}, 0},
		{api.Filter{Hop: "d.test"}, 1},
		{api.Filter{Hop: "c.test"}, 2},
		{api.Filter{OlderThan: time.Hour}, 0},
	} {
		got, err := f.cl.List(ctx, c.f)
		if err != nil || len(got) != c.want {
			t.Errorf("List(%+v) = %d messages, %v; want %d", c.f, len(got), err, c.want)
		}
	}
	if code, _ := f.get("/v1/messages?status=lost"); code != 400 {
		t.Errorf("bad status filter answered %d", code)
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.enqueue("<sender@a.test>", "<alice@c.test>", "<bob@c.test>")
	b := f.enqueue("<sender@a.test>", "<carol@c.test>")

	c, err := f.cl.Act(ctx, api.ActionHold, strings.ToLower(a))
	if err != nil || c.ID != a || c.Recipients != 2 || !strings.Contains(c.Result, "held") {
		t.Fatalf("hold: %+v, %v", c, err)
	}
	if c, _ := f.cl.Act(ctx, api.ActionHold, a); c.Recipients != 0 || c.Result != "already held" {
		t.Errorf("second hold: %+v", c)
	}
	if _, err := f.cl.Act(ctx, api.ActionRetry, a); err == nil || !strings.Contains(err.Error(), "held") {
		t.Errorf("retry while held: %v", err)
	}
	if held, _ := f.cl.List(ctx, api.Filter{Status: "held"}); len(held) != 1 || held[0].Recipients[0].NextAttempt != nil {
		t.Errorf("held list: %+v", held)
	}
	if c, err := f.cl.Act(ctx, api.ActionRelease, a); err != nil || c.Recipients != 2 || f.q.notified == 0 || f.q.revived == 0 {
		t.Errorf("release: %+v, %v (notified %d, revived %d)", c, err, f.q.notified, f.q.revived)
	}
	if c, _ := f.cl.Act(ctx, api.ActionRetry, a); c.Recipients != 0 {
		t.Errorf("retry of due recipients: %+v", c)
	}
	if c, err := f.cl.Act(ctx, api.ActionBounce, b); err != nil || c.Recipients != 1 {
		t.Errorf("bounce: %+v, %v", c, err)
	}
	if c, err := f.cl.Act(ctx, api.ActionDelete, a); err != nil || c.Recipients != 2 || !strings.Contains(c.Result, "without a DSN") {
		t.Errorf("delete: %+v, %v", c, err)
	}
	if _, err := f.cl.Act(ctx, api.ActionDelete, a); !client.NotFound(err) || !strings.Contains(err.Error(), "no longer queued") {
		t.Errorf("delete of a deleted message: %v", err)
	}
	if _, err := f.cl.Act(ctx, api.ActionHold, "ZZZZ"); !client.NotFound(err) {
		t.Errorf("hold of an unknown message: %v", err)
	}
	if _, err := f.cl.Act(ctx, "explode", b); err == nil {
		t.Error("unknown action accepted")
	}
	// Both are in the history now, with what happened to them.
	for id, want := range map[string]string{a: "received,held,released,deleted", b: "received,bounced,failed"} {
		m, err := f.cl.Show(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range m.Events {
			kinds = append(kinds, e.Kind)
		}
		if m.State != api.StateRetired || m.Retired == nil || strings.Join(kinds, ",") != want {
			t.Errorf("show %s: state %s, events %v; want retired, %s", id, m.State, kinds, want)
		}
	}
	// The bounce made a DSN for the sender: the one message queued now.
	if l, _ := f.cl.List(ctx, api.Filter{}); len(l) != 1 || l[0].From != "" || l[0].Recipients[0].Address != "sender@a.test" {
		t.Errorf("after bounce and delete the queue holds %+v, want only the DSN", l)
	}
}

func TestShowAndStats(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.enqueue("<sender@a.test>", "<alice@c.test>")
	if _, err := f.sp.Record(ctx, a, []spool.Result{{Rcpt: 0, Status: spool.StatusDeferred, Reply: "451 later", Remote: "127.0.0.3:25", NextAttempt: time.Now().Add(time.Minute)}}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // distinct IDs differ in their last digit at least
	b := f.enqueue("<sender@a.test>", "<bob@d.test>")
	common := 0
	for a[common] == b[common] {
		common++
	}
	if _, err := f.cl.Show(ctx, a[:common]); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("show of an ambiguous prefix: %v", err)
	}
	m, err := f.cl.Show(ctx, a[:common+1])
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != a || m.State != api.StateQueued || !strings.Contains(m.Headers, "Subject: hello\r\n") || strings.Contains(m.Headers, "body") {
		t.Errorf("show: %+v", m)
	}
	r := m.Recipients[0]
	if r.NextHop != "smtp:c.test" || len(r.Schedule) != scheduleLen || !r.Schedule[0].Equal(*r.NextAttempt) || !r.Schedule[1].After(r.Schedule[0]) {
		t.Errorf("recipient %+v", r)
	}
	if len(m.Events) != 2 || m.Events[1].Kind != "deferred" || m.Events[1].Recipient != "alice@c.test" || !strings.Contains(m.Events[1].Text, "relay=127.0.0.3:25") {
		t.Errorf("events %+v", m.Events)
	}
	code, v := f.get("/v1/stats")
	st, ok := v.(map[string]any)
	if code != 200 || !ok {
		t.Fatalf("stats: %d %v", code, v)
	}
	if st["messages"] != 2.0 || st["held"] != 0.0 || st["spool_bytes"].(float64) <= 0 {
		t.Errorf("stats %v", st)
	}
	rc := st["recipients"].(map[string]any)
	if rc["pending"] != 1.0 || rc["deferred"] != 1.0 || rc["delivered"] != 0.0 || rc["failed"] != 0.0 {
		t.Errorf("stats recipients %v", rc)
	}
	if hops := st["by_hop"].(map[string]any); hops["smtp:c.test"] != 1.0 || hops["smtp:d.test"] != 1.0 {
		t.Errorf("stats by hop %v", hops)
	}
	if o := st["oldest"].(map[string]any); o["id"] != a || o["age_seconds"].(float64) < 0 {
		t.Errorf("stats oldest %v", o)
	}
	if code, _ := f.get("/v1/messages/0000000000000"); code != 404 {
		t.Errorf("show of an unknown message answered %d", code)
	}
}

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<a@b.test>"}, []spool.Recipient{{To: "<c@d.test>"}}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	conns := 3
	m := NewMetrics(MetricsOptions{Spool: sp, Connections: func() int { return conns }})
	m.Accepted(3 * time.Millisecond)
	m.Refused("RCPT", smtpd.Reply{Code: 554, Enhanced: "5.7.1"})
	m.Delivery(spool.StatusDelivered, "smtp:127.0.0.3:2525", 40*time.Millisecond)
	m.DSN()
	rec := &strings.Builder{}
	srv := &http.Server{Handler: m.Handler()}
	l, err := net.Listen("tcp", "127.0.0.81:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rec.Write(b)
	for _, want := range []string{
		"relay_smtp_messages_accepted_total 1",
		`relay_smtp_rejected_total{code="554",command="RCPT",status="5.7.1"} 1`,
		"relay_smtp_accept_duration_seconds_count 1",
		`relay_deliveries_total{next_hop="smtp:127.0.0.3:2525",result="delivered"} 1`,
		`relay_delivery_duration_seconds_count{result="delivered"} 1`,
		"relay_dsn_sent_total 1",
		"relay_smtp_connections 3",
		"relay_queue_messages 1",
		`relay_queue_recipients{status="pending"} 1`,
		"relay_spool_bytes ",
		"relay_queue_oldest_message_age_seconds ",
	} {
		if !strings.Contains(rec.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", rec)
	}
}

// Only the first Close removes the socket: http.Server.Serve closes its
// listener again when it returns, and the path may be someone else's by
// then.
func TestListenerClosesOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, []byte("newer"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if b, err := os.ReadFile(sock); err != nil || string(b) != "newer" {
		t.Fatalf("a second Close took what is at the path now: %q, %v", b, err)
	}
}
