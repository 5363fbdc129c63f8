package relay

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/relay/webhook"
	"github.com/relay-mta/relay/spool"
)

func TestWebhookEventsAreSpoolNoticeKinds(t *testing.T) {
	if !reflect.DeepEqual(config.WebhookEvents, spool.NoticeKinds) {
		t.Fatalf("config.WebhookEvents = %v, spool.NoticeKinds = %v", config.WebhookEvents, spool.NoticeKinds)
	}
}

// hookReceiver is a webhook endpoint on 127.0.23.x: it answers status
// (503 to start with) and keeps the events it accepted.
type hookReceiver struct {
	url    string
	status atomic.Int32
	mu     sync.Mutex
	events []webhook.Event
	bodies [][]byte
	sigs   []string
}

func newHookReceiver(t *testing.T, ip string) *hookReceiver {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hookReceiver{url: "http://" + l.Addr().String() + "/events"}
	h.status.Store(http.StatusServiceUnavailable)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		code := int(h.status.Load())
		if code == http.StatusOK {
			var ev webhook.Event
			if err := json.Unmarshal(body, &ev); err != nil {
				code = http.StatusBadRequest
			} else {
				h.mu.Lock()
				h.events = append(h.events, ev)
				h.bodies = append(h.bodies, body)
				h.sigs = append(h.sigs, r.Header.Get(webhook.SignatureHeader))
				h.mu.Unlock()
			}
		}
		w.WriteHeader(code)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return h
}

func (h *hookReceiver) got() []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhook.Event(nil), h.events...)
}

// A delivery while the receiver is down waits in the spool, shows in
// queue stats and the metrics, and is posted, signed, once the receiver
// answers.
func TestWebhookBacklogInStatsThenPosted(t *testing.T) {
	rc := newHookReceiver(t, "127.0.23.3")
	cfg := testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.23.2:0"}
	cfg.Admin.Socket = filepath.Join(cfg.DataDir, "admin.sock")
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "hook.secret"), []byte("k3y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks = []config.Webhook{{Name: "crm", URL: rc.url, Events: []string{"delivered", "held"},
		SecretFile: filepath.Join(cfg.DataDir, "hook.secret"), Timeout: time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, Lifetime: time.Hour, Concurrency: 2}}
	r, _ := launch(t, cfg, Options{}, nil)
	c := smtptest.Dial(t, r.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	id := c.Send("<x@outside.test>", []string{"<alice@b.test>"}, "Subject: hi\r\n\r\nhello\r\n")

	admin := client.NewAdmin(cfg.Admin.Socket)
	var st []webhookRow
	waitUntil(t, "the event in the backlog, the webhook failing", func() bool {
		s, err := admin.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st = st[:0]
		for _, w := range s.Webhooks {
			st = append(st, webhookRow{w.Name, w.Backlog, w.Failures, w.LastError})
		}
		return len(st) == 1 && st[0].backlog == 1 && st[0].failures > 0
	})
	if st[0].name != "crm" || !strings.Contains(st[0].lastError, "503") {
		t.Errorf("stats = %+v", st)
	}
	metrics := r.ops.metrics
	text := scrape(t, metrics.Handler())
	for _, want := range []string{`relay_webhook_backlog_events{webhook="crm"} 1`, `relay_webhook_events_total{result="retry",webhook="crm"}`} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	rc.status.Store(http.StatusOK)
	waitUntil(t, "the event posted", func() bool { return len(rc.got()) == 1 })
	ev := rc.got()[0]
	if ev.Event != "delivered" || ev.QueueID != id || ev.Recipient != "alice@b.test" || ev.NextHop != "local" || ev.Remote != "local" ||
		ev.Attempt != 1 || !strings.HasPrefix(ev.Reply, "250 ") || ev.Relay != "b.test" || ev.ID != "b.test:"+id+":0:1:delivered" {
		t.Errorf("event = %+v", ev)
	}
	if _, err := webhook.Verify([]byte("k3y"), rc.sigs[0], rc.bodies[0]); err != nil {
		t.Errorf("signature: %v", err)
	}
	waitUntil(t, "an empty backlog", func() bool {
		s, err := admin.Stats(context.Background())
		return err == nil && s.Webhooks[0].Backlog == 0 && s.Webhooks[0].Posted == 1
	})
}

type webhookRow struct {
	name              string
	backlog, failures int
	lastError         string
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWebhookSecretFileMissing(t *testing.T) {
	cfg := testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.23.2:0"}
	cfg.Webhooks = []config.Webhook{{Name: "crm", URL: "http://127.0.23.3:1/x", Events: []string{"failed"}, SecretFile: filepath.Join(cfg.DataDir, "nope")}}
	_, err := New(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "[[webhook]] crm: secret_file") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("New = %v", err)
	}
}
