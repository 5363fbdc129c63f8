package integration

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/spool"
	"golang.org/x/crypto/bcrypt"
)

// The chaos test (issue 11, item 1): five relay daemons a..e, each a
// subprocess on its own loopback address, in a mesh where every relay
// reaches every other relay through a fault Link. Senders submit messages
// to random entry relays for random recipients, some along source routes
// through one or two other relays, some to users that do not exist (these
// must bounce back to the sender, a local user of the entry relay). A
// nemesis cuts, heals and delays links, drops connections mid-DATA, and
// SIGKILLs and restarts relays. Then everything heals, the queues drain,
// the relays stop cleanly, and the checker reads every mailbox from the
// spools: each message that got a 250 is delivered exactly once or
// bounced exactly once, nothing twice, every queue empty.
//
// The default run is short (15s of faults). Longer, or another seed:
//
//	RELAY_CHAOS=3m RELAY_CHAOS_SEED=7 go test -run TestChaos -v ./integration

var (
	chaosNames = []string{"a", "b", "c", "d", "e"}
	chaosUsers = []string{"alice", "bob", "carol"}
)

const chaosBaseIP = 200 // relay i listens on 127.0.0.(201+i); its links on 127.0.0.(211+i)

// chaosRelay is one relay of the mesh and the links it sends through.
type chaosRelay struct {
	name, dir, cfg, addr string
	links                map[string]*Link // next-hop relay name -> link from this relay to it
	p                    *proc            // nil while dead
	restartAt            time.Time
}

// writeConfig writes cfg as r's relay.toml and a users file of names
// (password "pw") beside it.
func (r *chaosRelay) writeConfig(t *testing.T, cfg string, names []string) {
	t.Helper()
	r.cfg = filepath.Join(r.dir, "relay.toml")
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range names {
		if err := users.Add(filepath.Join(r.dir, "users"), u, "pw", bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
	}
}

// chaosMsg is one submission and what must become of it.
type chaosMsg struct {
	tok     string // unique, in the Subject
	entry   string // entry relay
	from    string // user at the entry relay
	rcpts   []*chaosRcpt
	acked   bool   // got a 250
	refused bool   // a definite 5xx at submission
	queueID string // from the 250
	stray   []string
}

// chaosRcpt is one recipient of a chaosMsg.
type chaosRcpt struct {
	addr     string   // the final mailbox address user@x.test
	wire     string   // the RCPT TO path, with its source route if any
	bounce   bool     // the recipient does not exist: one DSN to the sender
	delivery []string // where copies were found: relay/user
	dsns     []string // where DSNs naming this recipient were found
}

func chaosEnv(t *testing.T) (seed uint64, dur time.Duration) {
	return seedAndLength(t, "RELAY_CHAOS_SEED", 1, "RELAY_CHAOS", 15*time.Second)
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	seed, dur := chaosEnv(t)
	t.Logf("chaos: seed %d, %v of faults (RELAY_CHAOS_SEED, RELAY_CHAOS)", seed, dur)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	relayBinary(t)

	// The relays: addresses first, then the links between them, then
	// configs that route each other relay's domain through a link.
	relays := map[string]*chaosRelay{}
	for i, n := range chaosNames {
		dir := filepath.Join(t.TempDir(), n)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		relays[n] = &chaosRelay{name: n, dir: dir, addr: freeAddr(t, "127.0.0."+strconv.Itoa(chaosBaseIP+1+i)), links: map[string]*Link{}}
	}
	var allLinks []*Link
	for i, from := range chaosNames {
		for _, to := range chaosNames {
			if to == from {
				continue
			}
			l, err := NewLink("127.0.0."+strconv.Itoa(chaosBaseIP+11+i)+":0", relays[to].addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(l.Close)
			relays[from].links[to] = l
			allLinks = append(allLinks, l)
		}
	}
	for _, n := range chaosNames {
		r := relays[n]
		var routes strings.Builder
		for _, to := range chaosNames {
			if to != n {
				fmt.Fprintf(&routes, "[[route]]\ndomain = %q\nto = %q\ntls = \"none\"\n", to+".test", r.links[to].Addr())
			}
		}
		cfg := fmt.Sprintf(`hostname = "%[1]s.test"
data_dir = %[2]q
local_domains = ["%[1]s.test"]
relay_networks = ["127.0.0.0/8"]
users_file = "users"
[smtp]
listen = [%[3]q]
[pop3]
listen = []
[admin]
socket = "admin.sock"
[queue]
retry_min = "200ms"
retry_max = "2s"
lifetime = "24h"
delay_warning = "0"
%[4]s`, n, r.dir, r.addr, routes.String())
		r.writeConfig(t, cfg, chaosUsers)
		r.p = startProc(t, r.cfg, r.addr)
	}

	// Senders: each with its own generator, seeded from the test's.
	var (
		mu   sync.Mutex
		msgs []*chaosMsg
	)
	stopLoad := load(seed, 4, func(srng *rand.Rand, s, n int) {
		m := chaosPlan(srng, seed, s, n)
		chaosSubmit(relays[m.entry].addr, m)
		mu.Lock()
		msgs = append(msgs, m)
		mu.Unlock()
		if !m.acked {
			time.Sleep(20 * time.Millisecond) // the entry relay is down
		} else {
			time.Sleep(time.Duration(srng.IntN(30)) * time.Millisecond)
		}
	})

	// The nemesis, in the test goroutine so that restarts may fail the test.
	var kills, cuts, drops, lostReplies, delays int
	end := time.Now().Add(dur)
	cutUntil := map[*Link]time.Time{}
	for time.Now().Before(end) {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		now := time.Now()
		for _, n := range chaosNames {
			if r := relays[n]; r.p == nil && now.After(r.restartAt) {
				r.p = startProc(t, r.cfg, r.addr)
			}
		}
		for l, until := range cutUntil {
			if now.After(until) {
				l.Heal()
				delete(cutUntil, l)
			}
		}
		switch x := rng.IntN(100); {
		case x < 30: // cut a link for a while
			l := allLinks[rng.IntN(len(allLinks))]
			l.Cut()
			cutUntil[l] = now.Add(time.Duration(300+rng.IntN(3000)) * time.Millisecond)
			cuts++
		case x < 50: // slow a link down, or speed it up again
			l := allLinks[rng.IntN(len(allLinks))]
			if rng.IntN(2) == 0 {
				l.SetDelay(time.Duration(rng.IntN(300)) * time.Millisecond)
			} else {
				l.SetDelay(0)
			}
			delays++
		case x < 62: // drop the next connections mid-DATA
			allLinks[rng.IntN(len(allLinks))].DropMidData(1 + rng.IntN(2))
			drops++
		case x < 75: // lose the 250 after the dot: the sender must re-send, the receiver must not deliver twice
			allLinks[rng.IntN(len(allLinks))].DropAfterData(1 + rng.IntN(3))
			lostReplies++
		default: // SIGKILL a relay; it comes back a little later
			dead := 0
			for _, n := range chaosNames {
				if relays[n].p == nil {
					dead++
				}
			}
			r := relays[chaosNames[rng.IntN(len(chaosNames))]]
			if r.p == nil || dead >= 2 {
				continue
			}
			r.p.kill()
			r.p, r.restartAt = nil, now.Add(time.Duration(200+rng.IntN(2000))*time.Millisecond)
			kills++
		}
	}
	stopLoad()
	var midData, afterData int
	for _, l := range allLinks {
		_, d := l.Stats()
		midData += d
		afterData += l.RepliesDropped()
	}
	t.Logf("nemesis: %d kills, %d cuts, %d delay changes; %d mid-DATA drop orders, %d connections dropped mid-DATA; %d lost-reply orders, %d replies lost",
		kills, cuts, delays, drops, midData, lostReplies, afterData)

	// Heal everything, bring every relay back, wait for the queues.
	for _, l := range allLinks {
		l.Heal()
		l.SetDelay(0)
		l.DropMidData(0)
		l.DropAfterData(0)
	}
	for _, n := range chaosNames {
		if r := relays[n]; r.p == nil {
			r.p = startProc(t, r.cfg, r.addr)
		}
	}
	drained := chaosDrain(t, relays, 90*time.Second)

	// Stop cleanly, then read the spools.
	for _, n := range chaosNames {
		if err := relays[n].p.stop(); err != nil {
			t.Errorf("relay %s: %v", n, err)
		}
	}
	for _, n := range chaosNames { // SIGKILL is the nemesis's; a panic is a bug
		logText, _ := os.ReadFile(relays[n].cfg + ".log")
		if i := bytes.Index(logText, []byte("panic:")); i >= 0 {
			t.Errorf("relay %s panicked: %.2000s", n, logText[i:])
		} else if i := bytes.Index(logText, []byte("fatal error:")); i >= 0 {
			t.Errorf("relay %s died: %.2000s", n, logText[i:])
		}
	}
	byTok := map[string]*chaosMsg{}
	for _, m := range msgs {
		byTok[m.tok] = m
	}
	var stray []string
	queued := 0
	for _, n := range chaosNames {
		sp, err := spool.Open(spool.Options{Dir: filepath.Join(relays[n].dir, "spool"), GCInterval: -1})
		if err != nil {
			t.Fatalf("relay %s: open spool: %v", n, err)
		}
		if err := sp.List(func(m *spool.Message) error {
			queued++
			if queued <= 10 {
				var rs []string
				for _, r := range m.Recipients {
					rs = append(rs, fmt.Sprintf("%s %v %q", r.To, r.Status, r.LastReply))
				}
				t.Errorf("relay %s: message %s from %s still queued: %s", n, m.ID, m.From, strings.Join(rs, "; "))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, u := range chaosUsers {
			entries, err := sp.Mailbox(u)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				raw, err := sp.MailboxMessage(u, e.Seq)
				if err != nil {
					t.Fatal(err)
				}
				where := n + "/" + u
				tok := chaosTokRE.Find(raw)
				m := byTok[string(tok)]
				if m == nil {
					stray = append(stray, fmt.Sprintf("%s: %.200q", where, raw))
					continue
				}
				if chaosIsDSN(raw) {
				blocks:
					for _, b := range chaosDSNRecipients(t, raw) {
						for _, r := range m.rcpts {
							if strings.EqualFold(b.final, r.addr) {
								w := where
								if b.action != "failed" {
									w += " (Action: " + b.action + ")"
								}
								r.dsns = append(r.dsns, w)
								continue blocks
							}
						}
						m.stray = append(m.stray, fmt.Sprintf("DSN at %s for %s", where, b.final))
					}
					continue
				}
				found := false
				for _, r := range m.rcpts {
					if chaosMailbox(r.addr) == where {
						r.delivery = append(r.delivery, where)
						found = true
					}
				}
				if !found {
					m.stray = append(m.stray, "copy at "+where)
				}
			}
		}
		sp.Close()
	}

	// The verdict.
	var sent, rcpts, acked, unacked, unackedArrived, delivered, bounced, duplicates, lost, wrong int
	var problems []string
	for _, m := range msgs {
		sent++
		if m.acked {
			acked++
		}
		if !m.acked {
			unacked++
		}
		rcpts += len(m.rcpts)
		if len(m.stray) > 0 {
			wrong++
			problems = append(problems, fmt.Sprintf("WRONG %s: %v", m.describe(), m.stray))
		}
		arrived := false
		for _, r := range m.rcpts {
			delivered += len(r.delivery)
			bounced += len(r.dsns)
			copies := len(r.delivery) + len(r.dsns)
			arrived = arrived || copies > 0
			if copies > 1 {
				duplicates += copies - 1
				problems = append(problems, fmt.Sprintf("DUPLICATE for %s: %s", r.wire, m.describe()))
				continue
			}
			if copies == 0 {
				if m.acked {
					lost++
					problems = append(problems, fmt.Sprintf("LOST for %s: %s", r.wire, m.describe()))
				}
				continue
			}
			if r.bounce && (len(r.dsns) != 1 || r.dsns[0] != m.entry+"/"+m.from) ||
				!r.bounce && (len(r.delivery) != 1 || r.delivery[0] != chaosMailbox(r.addr)) {
				wrong++
				problems = append(problems, fmt.Sprintf("WRONG for %s: %s", r.wire, m.describe()))
			}
		}
		if !m.acked && arrived {
			unackedArrived++ // stored before the entry relay died, 250 never seen: fine once
		}
	}
	t.Logf("chaos seed %d: sent %d messages to %d recipients (acked %d, not acked %d of which %d arrived anyway), delivered %d, bounced %d, duplicates %d, lost %d, wrong outcome %d, stray %d, still queued %d",
		seed, sent, rcpts, acked, unacked, unackedArrived, delivered, bounced, duplicates, lost, wrong, len(stray), queued)
	for i, p := range problems {
		if i == 30 {
			t.Errorf("... and %d more", len(problems)-30)
			break
		}
		t.Error(p)
	}
	for _, s := range stray {
		t.Errorf("message with no known token in %s", s)
	}
	if !drained {
		t.Error("the queues did not drain")
	}
	if acked < 20 {
		t.Errorf("only %d messages acknowledged: the load did not happen", acked)
	}
}

var chaosTokRE = regexp.MustCompile(`chaos-[0-9]+-[0-9]+-[0-9]+`)

func (m *chaosMsg) describe() string {
	var rs []string
	for _, r := range m.rcpts {
		rs = append(rs, fmt.Sprintf("<%s> (bounce expected %v): delivered at %v, DSNs at %v", r.wire, r.bounce, r.delivery, r.dsns))
	}
	return fmt.Sprintf("%s: entry %s from %s (queue ID %q, acked %v) to %s", m.tok, m.entry, m.from, m.queueID, m.acked, strings.Join(rs, "; "))
}

// chaosDSNRecipients returns Final-Recipient (the address) and Action of
// every per-recipient block of a DSN.
func chaosDSNRecipients(t *testing.T, raw []byte) []struct{ final, action string } {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var out []struct{ final, action string }
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		if !strings.EqualFold(p.Header.Get("Content-Type"), "message/delivery-status") {
			continue
		}
		text, _ := io.ReadAll(p)
		for _, line := range strings.Split(strings.ReplaceAll(string(text), "\r\n", "\n"), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch strings.ToLower(k) {
			case "final-recipient":
				_, addr, _ := strings.Cut(v, ";")
				out = append(out, struct{ final, action string }{final: strings.TrimSpace(addr)})
			case "action":
				if len(out) > 0 {
					out[len(out)-1].action = strings.ToLower(v)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Errorf("DSN with no Final-Recipient: %.500q", raw)
	}
	return out
}

// chaosMailbox turns user@x.test into x/user.
func chaosMailbox(addr string) string {
	user, dom, _ := strings.Cut(addr, "@")
	return strings.TrimSuffix(dom, ".test") + "/" + user
}

// chaosIsDSN tells a delivery status notification from a delivered message.
func chaosIsDSN(raw []byte) bool {
	hdr, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	return bytes.Contains(bytes.ToLower(hdr), []byte("multipart/report"))
}

// chaosPlan picks the n-th message of sender s.
func chaosPlan(rng *rand.Rand, seed uint64, s, n int) *chaosMsg {
	others := func(not ...string) []string {
		var out []string
	next:
		for _, x := range chaosNames {
			for _, y := range not {
				if x == y {
					continue next
				}
			}
			out = append(out, x)
		}
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	m := &chaosMsg{
		tok:   fmt.Sprintf("chaos-%d-%d-%d", seed, s, n),
		entry: chaosNames[rng.IntN(len(chaosNames))],
		from:  chaosUsers[rng.IntN(len(chaosUsers))],
	}
	k := 1
	if rng.IntN(100) < 25 { // a quarter of the messages have two or three recipients
		k += 1 + rng.IntN(2)
	}
	used := map[string]bool{}
	for len(m.rcpts) < k {
		r := &chaosRcpt{}
		dest := chaosNames[rng.IntN(len(chaosNames))]
		user := chaosUsers[rng.IntN(len(chaosUsers))]
		x := rng.IntN(100)
		if x < 15 { // nobody there: the entry relay relays it, the last hop refuses it
			r.bounce = true
			dest = others(m.entry)[0]
			user = fmt.Sprintf("nobody%d", len(m.rcpts))
		}
		r.addr = user + "@" + dest + ".test"
		if used[r.addr] {
			continue
		}
		used[r.addr] = true
		r.wire = r.addr
		if x >= 10 && x < 45 { // a source route through one or two other relays
			via := others(m.entry, dest)
			var hops []string
			for _, h := range via[:1+rng.IntN(2)] {
				hops = append(hops, "@"+h+".test")
			}
			r.wire = strings.Join(hops, ",") + ":" + r.addr
		}
		m.rcpts = append(m.rcpts, r)
	}
	return m
}

// chaosSubmit sends m to its entry relay and records whether it got a 250.
func chaosSubmit(addr string, m *chaosMsg) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := smtp.NewClient(nc)
	defer c.Close()
	fail := func(err error) {
		if se, ok := err.(*smtp.SMTPError); ok && se.Code >= 500 {
			m.refused = true
		}
	}
	if err := c.Hello("sender.test"); err != nil {
		return
	}
	from := m.from + "@" + m.entry + ".test"
	if err := c.Mail(from, nil); err != nil {
		fail(err)
		return
	}
	var to []string
	for _, r := range m.rcpts {
		if err := c.Rcpt(r.wire, nil); err != nil {
			fail(err)
			return
		}
		to = append(to, r.addr)
	}
	w, err := c.Data()
	if err != nil {
		return
	}
	body := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@%s.test>\r\n\r\nchaos body of %s\r\n%s",
		from, strings.Join(to, ", "), m.tok, m.tok, m.entry, m.tok, strings.Repeat("filler line to give DATA some length\r\n", 1+len(m.tok)%40))
	if _, err := w.Write([]byte(body)); err != nil {
		return
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		fail(err)
		return
	}
	m.acked = true
	_, m.queueID, _ = strings.Cut(resp.StatusText, "queued as ")
	c.Quit()
}

// chaosDrain waits until every relay's queue is empty (queuesDrained).
func chaosDrain(t *testing.T, relays map[string]*chaosRelay, timeout time.Duration) bool {
	t.Helper()
	socks := map[string]string{}
	for _, n := range chaosNames {
		socks[n] = filepath.Join(relays[n].dir, "admin.sock")
	}
	return queuesDrained(t, socks, timeout)
}
