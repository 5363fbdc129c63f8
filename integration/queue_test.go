package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// The operators' commands, run as the real binary against in-process
// relays: `relay queue ... --admin SOCKET`.

// withAdmin gives n an admin socket in its data directory.
func (n *node) withAdmin() *node {
	n.cfg.Admin.Socket = filepath.Join(n.cfg.DataDir, "admin.sock")
	return n
}

// queue runs `relay queue ARGS --admin SOCKET` and fails the test on a
// non-zero exit.
func (n *node) queue(args ...string) string {
	n.t.Helper()
	return mustRun(n.t, nil, append([]string{"queue"}, append(args, "--admin", n.cfg.Admin.Socket)...)...)
}

// queueJSON runs a queue command with --json and decodes its output the
// way a script would: generic maps and slices.
func (n *node) queueJSON(args ...string) any {
	n.t.Helper()
	out := n.queue(append(args, "--json")...)
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		n.t.Fatalf("relay queue %v --json: not JSON: %v\n%s", args, err, out)
	}
	return v
}

// listed returns the message with id from `relay queue list --json`, nil
// when it is not queued.
func (n *node) listed(id string) map[string]any {
	n.t.Helper()
	for _, m := range n.queueJSON("list").([]any) {
		if mm := m.(map[string]any); mm["id"] == id {
			return mm
		}
	}
	return nil
}

// rcpt0 is the first recipient of a message in the JSON form.
func rcpt0(m map[string]any) map[string]any {
	return m["recipients"].([]any)[0].(map[string]any)
}

// TestQueueHoldReleaseRetry: with the next hop partitioned away, `queue
// list` shows the deferred message; `hold` stops its attempts, also
// across a restart and after the partition heals; `retry` delivers a
// deferred message at once, long before its backoff; `release` + `retry`
// deliver the held one at once; `show` after delivery still prints the
// history, with the next hop's 250 reply.
func TestQueueHoldReleaseRetry(t *testing.T) {
	b, c := newNode(t, "b", "127.0.0.81").withAdmin(), newNode(t, "c", "127.0.0.82")
	b.cfg.Queue.RetryMin, b.cfg.Queue.RetryMax = 4*time.Second, 8*time.Second
	c.start()
	bc := link(t, "127.0.0.81", c)
	b.route("c.test", bc.Addr())
	b.start()
	bc.Cut()

	m1 := send(t, b.addr, "alice@c.test", "held one")
	waitFor(t, 10*time.Second, "m1 deferred", func() bool {
		m := b.listed(m1)
		return m != nil && rcpt0(m)["status"] == "deferred"
	})
	if out := b.queue("list"); !strings.Contains(out, m1) || !strings.Contains(out, "alice@c.test  (deferred") {
		t.Errorf("queue list does not show the deferred message:\n%s", out)
	}
	if out := b.queue("hold", m1[:11]); out != "hold "+m1+": held: 1 recipient will not be attempted until released\n" {
		t.Errorf("hold said %q", out)
	}
	heldAttempts := rcpt0(b.listed(m1))["attempts"]
	if due, _ := b.r.Spool().Due(time.Now().Add(24*time.Hour), 100); len(due) != 0 {
		t.Errorf("a held message is still scheduled: %+v", due)
	}

	m2 := send(t, b.addr, "alice@c.test", "retried one")
	var m2Next time.Time
	waitFor(t, 10*time.Second, "m2 deferred", func() bool {
		m := b.listed(m2)
		if m == nil || rcpt0(m)["status"] != "deferred" {
			return false
		}
		m2Next, _ = time.Parse(time.RFC3339, rcpt0(m)["next_attempt"].(string))
		return true
	})

	// Restart B and heal the link: the held message stays put.
	b.stop()
	b.start()
	bc.Heal()
	if m := b.listed(m1); m["held"] != true || rcpt0(m)["next_attempt"] != nil {
		t.Errorf("after a restart m1 is %v", m)
	}

	// m2 goes at once on retry, before its backoff would have sent it.
	b.queue("retry", m2)
	waitFor(t, 3*time.Second, "m2 in C's mailbox", func() bool { return countCopies(c.mailbox("alice"))["retried one"] == 1 })
	if !time.Now().Before(m2Next) {
		t.Errorf("m2 arrived only at %v, its backoff time was %v", time.Now(), m2Next)
	}

	// Past m1's old schedule and the restart jitter: still not attempted.
	time.Sleep(time.Until(m2Next) + b.cfg.Queue.RetryMin + time.Second)
	if n := countCopies(c.mailbox("alice"))["held one"]; n != 0 {
		t.Fatalf("the held message was delivered")
	}
	if m := b.listed(m1); m == nil || rcpt0(m)["attempts"] != heldAttempts {
		t.Fatalf("the held message was attempted: %v (attempts before: %v)", m, heldAttempts)
	}

	if out := b.queue("release", m1); !strings.Contains(out, "released: 1 recipient due now") {
		t.Errorf("release said %q", out)
	}
	// Release made it due now; it may be delivered before retry comes,
	// which then finds it gone.
	if _, errOut, code := run(t, nil, nil, "queue", "retry", m1, "--admin", b.cfg.Admin.Socket); code != 0 && !strings.Contains(errOut, "no longer queued") {
		t.Errorf("retry after release: exit %d: %s", code, errOut)
	}
	waitFor(t, 3*time.Second, "m1 in C's mailbox", func() bool { return countCopies(c.mailbox("alice"))["held one"] == 1 })
	waitFor(t, 3*time.Second, "B's queue empty", func() bool { return len(b.queued()) == 0 })

	// The history after delivery, human and JSON.
	out := b.queue("show", m1)
	reply := regexp.MustCompile(`250 2\.0\.0 OK: queued as [0-9A-Z]{13}`).FindString(out)
	for _, want := range []string{"Message " + m1 + ": retired", "alice@c.test: delivered", "held ", "released ", "delivered alice@c.test: relay=" + bc.Addr() + " 250 2.0.0 OK: queued as "} {
		if !strings.Contains(out, want) {
			t.Errorf("show after delivery lacks %q:\n%s", want, out)
		}
	}
	// The reply names C's queue ID for the message: the mailbox has it.
	box := c.mailboxRaw("alice")
	if reply == "" || !strings.Contains(string(box[len(box)-1]), "id "+strings.TrimPrefix(reply, "250 2.0.0 OK: queued as ")) {
		t.Errorf("the 250 reply %q does not name the queue ID C gave m1", reply)
	}
	show := b.queueJSON("show", m1).(map[string]any)
	if show["state"] != "retired" || show["held"] != false || rcpt0(show)["status"] != "delivered" || rcpt0(show)["last_reply"] != reply {
		t.Errorf("show --json after delivery: %v", show)
	}
	var kinds []string
	for _, e := range show["events"].([]any) {
		kinds = append(kinds, e.(map[string]any)["kind"].(string))
	}
	if got := strings.Join(kinds, ","); !regexp.MustCompile(`^received,(deferred,)+held,released,delivered$`).MatchString(got) {
		t.Errorf("events %s", got)
	}
}

// TestQueueDeleteAndBounce: `delete` removes a message and tells nobody;
// `bounce` fails one now, and its sender gets exactly one DSN. (The
// sender, bob@a.test, is a local user of the relay that holds both.)
func TestQueueDeleteAndBounce(t *testing.T) {
	a, c := newNode(t, "a", "127.0.0.83").withAdmin(), newNode(t, "c", "127.0.0.84")
	c.start()
	ac := link(t, "127.0.0.83", c)
	a.route("c.test", ac.Addr())
	a.start()
	ac.Cut()
	ids := map[string]string{}
	for _, s := range []string{"deleted one", "bounced one"} {
		id, err := sendOne(a.addr, "bob@a.test", "alice@c.test", "Subject: "+s+"\r\n\r\nbody\r\n")
		if err != nil {
			t.Fatal(err)
		}
		ids[s] = id
	}
	waitFor(t, 10*time.Second, "both deferred", func() bool {
		q := a.queued()
		return len(q) == 2 && q[0].Recipients[0].Status == spool.StatusDeferred && q[1].Recipients[0].Status == spool.StatusDeferred
	})

	if out := a.queue("delete", ids["deleted one"]); !strings.Contains(out, "deleted without a DSN") {
		t.Errorf("delete said %q", out)
	}
	_, errOut, code := run(t, nil, nil, "queue", "delete", ids["deleted one"], "--admin", a.cfg.Admin.Socket)
	if code == 0 || !strings.Contains(errOut, "no longer queued") {
		t.Errorf("deleting again: exit %d, %q", code, errOut)
	}
	time.Sleep(500 * time.Millisecond) // a DSN would be in the mailbox by now
	if box := a.mailboxRaw("bob"); len(box) != 0 {
		t.Fatalf("delete sent %d messages to the sender", len(box))
	}

	if out := a.queue("bounce", ids["bounced one"]); !strings.Contains(out, "bounced: 1 recipient failed now") {
		t.Errorf("bounce said %q", out)
	}
	waitFor(t, 5*time.Second, "the DSN in bob's mailbox", func() bool { return len(a.mailboxRaw("bob")) >= 1 })
	time.Sleep(500 * time.Millisecond) // a second DSN would be there by now
	box := a.mailboxRaw("bob")
	if len(box) != 1 {
		t.Fatalf("bob has %d messages, want exactly one DSN", len(box))
	}
	perMsg, perRcpt, returned := statusFields(t, box[0])
	if !strings.Contains(perRcpt.Get("Final-Recipient"), "alice@c.test") || perRcpt.Get("Action") != "failed" ||
		!strings.Contains(perRcpt.Get("Diagnostic-Code"), "cancelled by the administrator") || !strings.Contains(returned, "Subject: bounced one") {
		t.Errorf("the DSN: per message %v, per recipient %v, returned %q", perMsg, perRcpt, returned)
	}
	if len(a.queued()) != 0 {
		t.Errorf("A still queues %d messages", len(a.queued()))
	}
	for s, id := range ids {
		if out := a.queue("show", id); !strings.Contains(out, "retired") {
			t.Errorf("%s: show after it left the queue:\n%s", s, out)
		}
	}
}

// TestQueueJSON: list, show and stats --json parse and have the shape of
// docs/design.md §13; retry --all reports what it changed.
func TestQueueJSON(t *testing.T) {
	a, c := newNode(t, "a", "127.0.0.85").withAdmin(), newNode(t, "c", "127.0.0.86")
	c.start()
	ac := link(t, "127.0.0.85", c)
	a.route("c.test", ac.Addr())
	a.start()
	ac.Cut()
	id := send(t, a.addr, "alice@c.test", "json one")
	waitFor(t, 10*time.Second, "deferred", func() bool {
		q := a.queued()
		return len(q) == 1 && q[0].Recipients[0].Status == spool.StatusDeferred
	})

	list, ok := a.queueJSON("list").([]any)
	if !ok || len(list) != 1 {
		t.Fatalf("list --json: %v", list)
	}
	m := list[0].(map[string]any)
	checkKeys(t, "message", m, "id", "from", "created", "held", "recipients")
	r := rcpt0(m)
	checkKeys(t, "recipient", r, "address", "status", "attempts", "next_attempt", "last_reply")
	if m["id"] != id || m["from"] != "sender@a.test" || m["held"] != false || r["address"] != "alice@c.test" ||
		r["status"] != "deferred" || r["attempts"].(float64) < 1 || !strings.HasPrefix(r["last_reply"].(string), "451 ") {
		t.Errorf("list --json: %v", m)
	}
	for _, k := range []string{"created", "next_attempt"} {
		v := m[k]
		if k == "next_attempt" {
			v = r[k]
		}
		if s, ok := v.(string); !ok {
			t.Errorf("%s = %v, want an RFC 3339 time", k, v)
		} else if _, err := time.Parse(time.RFC3339, s); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	if l := a.queueJSON("list", "--status", "pending").([]any); len(l) != 0 {
		t.Errorf("list --status pending: %v", l)
	}
	if l := a.queueJSON("list", "--to", "ALICE@", "--hop", strings.Split(ac.Addr(), ":")[0]).([]any); len(l) != 1 {
		t.Errorf("list --to --hop: %v", l)
	}

	show := a.queueJSON("show", id).(map[string]any)
	checkKeys(t, "show", show, "id", "from", "created", "held", "recipients", "headers", "events", "state")
	if !strings.Contains(show["headers"].(string), "Subject: json one\r\n") || show["state"] != "queued" {
		t.Errorf("show --json: %v", show)
	}
	if sched, _ := rcpt0(show)["schedule"].([]any); len(sched) < 2 {
		t.Errorf("show --json schedule: %v", rcpt0(show)["schedule"])
	}

	st := a.queueJSON("stats").(map[string]any)
	checkKeys(t, "stats", st, "messages", "held", "recipients", "by_hop", "oldest", "spool_bytes")
	byStatus := st["recipients"].(map[string]any)
	if st["messages"] != 1.0 || byStatus["deferred"] != 1.0 || byStatus["pending"] != 0.0 || st["oldest"].(map[string]any)["id"] != id {
		t.Errorf("stats --json: %v", st)
	}
	if out := a.queue("stats"); !strings.Contains(out, "messages:    1 (0 held)") || !strings.Contains(out, "1 deferred") {
		t.Errorf("stats:\n%s", out)
	}

	ac.Heal()
	changes := a.queueJSON("retry", "--all").([]any)
	if len(changes) > 1 || (len(changes) == 1 && changes[0].(map[string]any)["id"] != id) {
		t.Errorf("retry --all --json: %v", changes)
	}
	waitFor(t, 5*time.Second, "delivery", func() bool { return len(c.mailbox("alice")) == 1 })
	if l := a.queueJSON("list").([]any); len(l) != 0 {
		t.Errorf("list after delivery: %v", l)
	}
	if out := a.queue("list"); out != "Mail queue is empty\n" {
		t.Errorf("empty list: %q", out)
	}
}

func checkKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s lacks %q: %v", what, k, m)
		}
	}
}

// TestMetricsMove: a GET of the metrics endpoint shows the counters move
// after 10 messages are relayed.
func TestMetricsMove(t *testing.T) {
	a, c := newNode(t, "a", "127.0.0.87"), newNode(t, "c", "127.0.0.88")
	a.cfg.Admin.MetricsListen = "127.0.0.87:0"
	c.start()
	a.route("c.test", c.addr)
	a.start()
	url := "http://" + a.r.MetricsAddr() + "/metrics"
	before := scrape(t, url)
	for i := 0; i < 10; i++ {
		send(t, a.addr, "alice@c.test", fmt.Sprintf("metrics %d", i))
	}
	if _, err := sendOne(a.addr, "x@a.test", "nobody@a.test", "Subject: x\r\n\r\nx\r\n"); err == nil {
		t.Fatal("a message for an unknown local user was accepted")
	}
	waitFor(t, 10*time.Second, "10 messages at C", func() bool { return len(c.mailbox("alice")) == 10 })
	after := scrape(t, url)
	hop := "smtp:" + c.addr + ";tls=none"
	for _, m := range []struct {
		name string
		want float64
	}{
		{"relay_smtp_messages_accepted_total", 10},
		{"relay_smtp_accept_duration_seconds_count", 10},
		{`relay_smtp_rejected_total{code="550",command="RCPT",status="5.1.1"}`, 1},
		{`relay_deliveries_total{next_hop="` + hop + `",result="delivered"}`, 10},
		{`relay_delivery_duration_seconds_count{result="delivered"}`, 10},
	} {
		if got := after[m.name] - before[m.name]; got != m.want {
			t.Errorf("%s moved by %v, want %v", m.name, got, m.want)
		}
	}
	for _, name := range []string{"relay_smtp_connections", "relay_queue_messages", `relay_queue_recipients{status="deferred"}`, "relay_dsn_sent_total", "relay_queue_oldest_message_age_seconds"} {
		if _, ok := after[name]; !ok {
			t.Errorf("metrics lack %s", name)
		}
	}
	if after["relay_spool_bytes"] <= 0 {
		t.Errorf("relay_spool_bytes = %v", after["relay_spool_bytes"])
	}
}

// scrape reads a Prometheus text page into name{labels} -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestAdminSocketAndStoppedDaemon: the socket is 0600; against a stopped
// daemon every form of the command says so in one line and exits
// non-zero.
func TestAdminSocketAndStoppedDaemon(t *testing.T) {
	a := newNode(t, "a", "127.0.0.89").withAdmin().start()
	fi, err := os.Lstat(a.cfg.Admin.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want a socket with 0600", fi.Mode())
	}
	cfgFile := writeFile(t, t.TempDir(), "a.toml", []byte(fmt.Sprintf("data_dir = %q\n[admin]\nsocket = %q\n", a.cfg.DataDir, a.cfg.Admin.Socket)))
	if out := mustRun(t, nil, "queue", "list", "--config", cfgFile); out != "Mail queue is empty\n" {
		t.Errorf("queue list --config: %q", out)
	}
	a.stop()
	if _, err := os.Lstat(a.cfg.Admin.Socket); !os.IsNotExist(err) {
		t.Errorf("the socket outlived the daemon: %v", err)
	}
	for _, args := range [][]string{
		{"queue", "list", "--admin", a.cfg.Admin.Socket},
		{"queue", "stats", "--config", cfgFile},
		{"queue", "hold", "0000000000000", "1111111111111", "--admin", a.cfg.Admin.Socket},
		{"queue", "show", "0000000000000", "--json", "--config", cfgFile},
	} {
		out, errOut, code := run(t, nil, nil, args...)
		if code == 0 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "not running") {
			t.Errorf("relay %s against a stopped daemon: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
}
