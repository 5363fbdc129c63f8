package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/relay/webhook"
	"golang.org/x/crypto/bcrypt"
)

// hookSink is a webhook receiver that can be killed and brought back on
// the same address. It counts every post it accepted by idempotency key.
type hookSink struct {
	t      *testing.T
	addr   string
	secret []byte

	mu    sync.Mutex
	srv   *http.Server
	posts map[string]int            // idempotency key → posts accepted
	byMsg map[string]map[string]int // queue ID → event kind → posts
	bad   int                       // posts with a bad signature or body
}

func newHookSink(t *testing.T, addr string, secret []byte) *hookSink {
	return &hookSink{t: t, addr: addr, secret: secret, posts: map[string]int{}, byMsg: map[string]map[string]int{}}
}

func (h *hookSink) start() {
	h.t.Helper()
	var l net.Listener
	var err error
	for range 100 { // the port of the killed server may linger a moment
		if l, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(h.serve)}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go srv.Serve(l)
}

// kill drops the listener and every connection at once, mid-request or
// not, as a crashed receiver would.
func (h *hookSink) kill() {
	h.mu.Lock()
	srv := h.srv
	h.mu.Unlock()
	srv.Close()
}

func (h *hookSink) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var ev webhook.Event
	_, verr := webhook.Verify(h.secret, r.Header.Get(webhook.SignatureHeader), body)
	if verr != nil || json.Unmarshal(body, &ev) != nil || ev.ID != r.Header.Get("Idempotency-Key") {
		h.mu.Lock()
		h.bad++
		h.mu.Unlock()
		http.Error(w, "bad post", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.posts[ev.ID]++
	if h.byMsg[ev.QueueID] == nil {
		h.byMsg[ev.QueueID] = map[string]int{}
	}
	h.byMsg[ev.QueueID][ev.Event]++
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// missing returns the acknowledged messages that lack a received or a
// delivered event.
func (h *hookSink) missing(acked map[string]bool) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for id := range acked {
		if m := h.byMsg[id]; m["received"] == 0 || m["delivered"] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// TestWebhookSurvivesKills sends a burst of mail to a relay subprocess
// with a webhook; during the burst the receiver is killed, the relay is
// killed with SIGKILL (once while the receiver is down, once while the
// backlog is being posted) and both come back. Every message that got a
// 250 must have its "received" and its "delivered" event at the
// receiver: at least once, none lost.
func TestWebhookSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test skipped in -short mode")
	}
	dir := t.TempDir()
	smtpAddr := freeAddr(t, "127.0.23.5")
	hookAddr := freeAddr(t, "127.0.23.4")
	secret := []byte("whsec-test")
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(filepath.Join(dir, "users"), "alice", "pw", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`hostname = "b.test"
data_dir = %q
local_domains = ["b.test"]
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = ""
[queue]
retry_min = "1s"                 # also spreads a restart's overdue work over 1s, not 30s
[[webhook]]
name = "sink"
url = "http://%s/events"
events = ["received", "delivered"]
secret_file = "hook.secret"
timeout = "2s"
retry_min = "50ms"
retry_max = "400ms"
concurrency = 4
`, dir, smtpAddr, hookAddr)
	cfgPath := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	sink := newHookSink(t, hookAddr, secret)
	sink.start()
	t.Cleanup(sink.kill)
	p := startProc(t, cfgPath, smtpAddr)

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		seq   atomic.Int64
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := seq.Add(1)
				id, err := sendOne(smtpAddr, "s@a.test", "alice@b.test", fmt.Sprintf("Subject: burst %d\r\n\r\nbody %d\r\n", n, n))
				if err != nil {
					time.Sleep(10 * time.Millisecond) // the relay is down
					continue
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	step := func(what string, d time.Duration) {
		time.Sleep(d)
		t.Logf("%-45s %5d messages acknowledged", what, count())
	}
	step("receiver up", 500*time.Millisecond)
	sink.kill()
	step("receiver killed", 500*time.Millisecond)
	p.kill()
	p = startProc(t, cfgPath, smtpAddr)
	step("relay SIGKILLed and restarted, receiver down", 500*time.Millisecond)
	sink.start()
	step("receiver back", 150*time.Millisecond)
	p.kill()
	p = startProc(t, cfgPath, smtpAddr)
	step("relay SIGKILLed while posting the backlog", 300*time.Millisecond)
	close(stop)
	wg.Wait()

	mu.Lock()
	all := make(map[string]bool, len(acked))
	for id := range acked {
		all[id] = true
	}
	mu.Unlock()
	if len(all) < 100 {
		t.Fatalf("only %d messages acknowledged; the burst did not happen", len(all))
	}
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		miss := sink.missing(all)
		if len(miss) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages lack an event after 60s, e.g. %v", len(miss), len(all), miss[:min(5, len(miss))])
		}
		time.Sleep(50 * time.Millisecond)
	}
	sink.mu.Lock()
	keys, posts, bad := len(sink.posts), 0, sink.bad
	for _, n := range sink.posts {
		posts += n
	}
	sink.mu.Unlock()
	t.Logf("%d messages acknowledged: %d distinct events at the receiver (%d posts, %d repeats dropped by key) within %v of the burst's end",
		len(all), keys, posts, posts-keys, time.Since(start).Round(time.Millisecond))
	if bad > 0 {
		t.Errorf("%d posts with a bad signature or body", bad)
	}
	if err := p.stop(); err != nil {
		t.Error(err)
	}
}
