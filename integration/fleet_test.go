package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
	"github.com/relay-mta/relay/spool"
)

// The fleet test (issue 23): a real DNS server (unbound on 127.0.30.1)
// publishes fleet.test MX 10 mx1, mx2, mx3 and MX 20 backup. Each MX
// name's address is a fault Link in front of a relay process; mx1..mx3
// pass the mail on to store.fleet.test (another relay, whose mailboxes the
// checker reads) through Links of their own, and the backup, finding
// itself in the MX list, forwards only to the better MXs (RFC 5321 §5.1).
// Two sending relays, s1 and s2, deliver by MX ([dns] mx_port: every
// MX listens on one high port, on its own address).
//
// Clients submit a stream of messages to s1 and s2. Meanwhile: replies to
// DATA are lost now and then on every Link (the sender retries, often
// through another MX, and the store must not keep two copies: the origin
// hand-off token, design §7 and §18); mx1 is SIGKILLed and restarted; mx2
// is partitioned (both its Links cut); then all three are down and the
// backup must hold the mail, and forward it when they return. The
// checker: every message that got a 250 is in a mailbox exactly once; in
// the calm phases (all up, backlogs caught up) each of mx1..mx3 carried
// 20-45% of it.
//
// Short form (about 25 s) in go test ./...; long form:
//
//	RELAY_FLEET=1m RELAY_FLEET_SEED=2 go test -run '^TestFleet$' -v ./integration
//
// where the load runs about twice RELAY_FLEET and mx2's partition lasts a
// minute.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet test skipped in -short mode")
	}
	seed, long := fleetEnv(t)
	relayBinary(t)
	// Phase lengths: calm, kill (mx1 down), partition (mx2 cut off),
	// all down (backup holds), calm again.
	ph := fleetPhases{calm: 4 * time.Second, kill: 2 * time.Second, partition: 4 * time.Second, allDown: 4 * time.Second}
	if long > 0 {
		ph = fleetPhases{calm: long / 2, kill: 5 * time.Second, partition: time.Minute, allDown: 10 * time.Second}
	}
	t.Logf("fleet: seed %d, phases %+v (RELAY_FLEET_SEED, RELAY_FLEET)", seed, ph)

	f := newFleet(t)
	dns := dnstest.Start(t, "127.0.30.1", dnstest.Zone{Name: "fleet.test", Records: []string{
		"@ MX 10 mx1", "@ MX 10 mx2", "@ MX 10 mx3", "@ MX 20 backup",
		"mx1 A " + f.mxIP["mx1"], "mx2 A " + f.mxIP["mx2"], "mx3 A " + f.mxIP["mx3"], "backup A " + f.mxIP["backup"],
	}})
	f.start(dns.Addr)

	// The load: clients submit to s1 and s2 until told to stop.
	var (
		mu    sync.Mutex
		msgs  []*fleetMsg
		phase = "calm"
	)
	stopLoad := load(seed, 4, func(crng *rand.Rand, c, n int) {
		mu.Lock()
		m := &fleetMsg{tok: fmt.Sprintf("fleet-%d-%d-%d", seed, c, n), phase: phase}
		mu.Unlock()
		entry := fleetSenders[crng.IntN(len(fleetSenders))]
		m.rcpt = fleetUsers[crng.IntN(len(fleetUsers))] + "@fleet.test"
		_, err := sendOne(f.relays[entry].addr, "client@"+entry+".test", m.rcpt,
			fmt.Sprintf("Subject: %s\r\nMessage-ID: <%s@fleet.test>\r\n\r\nbody of %s\r\n", m.tok, m.tok, m.tok))
		m.acked = err == nil
		mu.Lock()
		msgs = append(msgs, m)
		mu.Unlock()
		time.Sleep(time.Duration(5+crng.IntN(40)) * time.Millisecond)
	})
	setPhase := func(p string) {
		mu.Lock()
		phase = p
		mu.Unlock()
	}
	// Lost replies all along, on every Link, so that senders retry
	// through other MXs and MXs re-send to the store.
	lossStop := make(chan struct{})
	lossDone := make(chan struct{})
	go func() {
		defer close(lossDone)
		links := f.allLinks()
		lrng := rand.New(rand.NewPCG(seed, 0x1055))
		for {
			select {
			case <-lossStop:
				return
			case <-time.After(time.Duration(200+lrng.IntN(400)) * time.Millisecond):
				links[lrng.IntN(len(links))].DropAfterData(1)
			}
		}
	}()

	time.Sleep(ph.calm)
	setPhase("kill")
	t.Log("fleet: SIGKILL mx1")
	f.relays["mx1"].p.kill()
	time.Sleep(ph.kill)
	f.restart("mx1")
	setPhase("partition")
	t.Logf("fleet: mx2 partitioned for %v", ph.partition)
	f.in["mx2"].Cut()
	f.out["mx2"].Cut()
	time.Sleep(ph.partition)
	f.in["mx2"].Heal()
	f.out["mx2"].Heal()
	setPhase("all down")
	t.Log("fleet: mx1, mx2, mx3 down")
	for _, n := range fleetMXs {
		f.relays[n].p.kill()
	}
	held := 0
	backup := client.NewAdmin(filepath.Join(f.relays["backup"].dir, "admin.sock"))
	for end := time.Now().Add(ph.allDown); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := backup.List(ctx, api.Filter{})
		cancel()
		if err == nil {
			held = max(held, len(list))
		}
	}
	for _, n := range fleetMXs {
		f.restart(n)
	}
	// Recovery: the MXs come back one after another and the senders and
	// the backup catch up on their backlog, first at whichever MX answered
	// first; the spread is measured once that is over.
	setPhase("recovery")
	time.Sleep(ph.kill)
	setPhase("calm")
	time.Sleep(ph.calm)
	close(lossStop)
	<-lossDone
	stopLoad()
	for _, l := range f.allLinks() {
		l.DropAfterData(0)
	}
	drained := queuesDrained(t, f.sockets(), 90*time.Second)
	for _, n := range fleetAll {
		if err := f.relays[n].p.stop(); err != nil {
			t.Errorf("relay %s: %v", n, err)
		}
	}
	again := f.checkLogs()

	// The verdict, from the store's mailboxes.
	byTok := map[string]*fleetMsg{}
	for _, m := range msgs {
		byTok[m.tok] = m
	}
	copies := f.readStore(byTok)
	var sent, acked, delivered, duplicates, lost, viaBackup int
	perMX := map[string]int{}
	calmPerMX := map[string]int{}
	calm := 0
	for _, m := range msgs {
		sent++
		if m.acked {
			acked++
		}
		delivered += len(m.copies)
		switch {
		case len(m.copies) > 1:
			duplicates += len(m.copies) - 1
			t.Errorf("DUPLICATE %s (%s): %d copies, via %v", m.tok, m.phase, len(m.copies), m.copies)
		case len(m.copies) == 0 && m.acked:
			lost++
			if lost <= 20 {
				t.Errorf("LOST %s (%s, to %s)", m.tok, m.phase, m.rcpt)
			}
		}
		if len(m.copies) == 0 {
			continue
		}
		path := m.copies[0]
		if strings.Contains(path, "backup") {
			viaBackup++
		}
		for _, n := range fleetMXs {
			if strings.Contains(path, n) {
				perMX[n]++
				if m.phase == "calm" {
					calmPerMX[n]++
				}
			}
		}
		if m.phase == "calm" {
			calm++
		}
	}
	share := func(per map[string]int, total int) string {
		var parts []string
		for _, n := range fleetMXs {
			parts = append(parts, fmt.Sprintf("%s %d (%.0f%%)", n, per[n], 100*float64(per[n])/float64(max(total, 1))))
		}
		return strings.Join(parts, ", ")
	}
	t.Logf("fleet seed %d: sent %d, acked %d, delivered %d (%s), duplicates %d, lost %d; backup held up to %d while mx1-3 were down and forwarded %d; stray %d",
		seed, sent, acked, delivered, share(perMX, delivered), duplicates, lost, held, viaBackup, copies.stray)
	t.Logf("fleet seed %d: re-sends answered without a second copy: %s", seed, again)
	t.Logf("fleet seed %d: calm phases: %d delivered, %s", seed, calm, share(calmPerMX, calm))
	for _, n := range fleetMXs {
		if p := float64(calmPerMX[n]) / float64(max(calm, 1)); p < 0.20 || p > 0.45 {
			t.Errorf("%s carried %.0f%% of the mail of the calm phases, want 20-45%%", n, 100*p)
		}
	}
	if held == 0 || viaBackup == 0 {
		t.Errorf("backup held up to %d messages and forwarded %d: want some of each", held, viaBackup)
	}
	if copies.stray > 0 {
		t.Errorf("%d messages in the store with no known token", copies.stray)
	}
	if !drained {
		t.Error("the queues did not drain")
	}
	if acked < 100 {
		t.Errorf("only %d messages acknowledged: the load did not happen", acked)
	}
}

var (
	fleetSenders = []string{"s1", "s2"}
	fleetMXs     = []string{"mx1", "mx2", "mx3"}
	fleetAll     = []string{"s1", "s2", "mx1", "mx2", "mx3", "backup", "store"}
	fleetUsers   = []string{"alice", "bob"}
	fleetTokRE   = regexp.MustCompile(`fleet-[0-9]+-[0-9]+-[0-9]+`)
	// byRE finds the relays a message passed through in its Received fields.
	byRE = regexp.MustCompile(`\tby ([a-z0-9]+)\.fleet\.test \(relay\)`)
)

type fleetPhases struct{ calm, kill, partition, allDown time.Duration }

// fleetMsg is one submission and what became of it.
type fleetMsg struct {
	tok, phase, rcpt string
	acked            bool
	copies           []string // per copy in the store: the fleet relays it passed, "mx2 backup"
}

// fleetEnv reads RELAY_FLEET_SEED (default 1) and RELAY_FLEET (the long
// form's length; 0 for the short form).
func fleetEnv(t *testing.T) (seed uint64, long time.Duration) {
	return seedAndLength(t, "RELAY_FLEET_SEED", 1, "RELAY_FLEET", 0)
}

// fleet is the relays of the test and the Links in front of them.
type fleet struct {
	t      *testing.T
	relays map[string]*chaosRelay
	mxIP   map[string]string // MX name -> the address its A record gives (its inbound Link)
	mxPort int
	in     map[string]*Link // MX name -> Link from the senders (and the backup) to it
	out    map[string]*Link // mx1..mx3 -> Link from it to the store
}

// newFleet places the relays: processes on 127.0.32.x, the Links the DNS
// names on 127.0.30.x, every inbound Link on one port (mx_port).
func newFleet(t *testing.T) *fleet {
	f := &fleet{t: t, relays: map[string]*chaosRelay{}, mxIP: map[string]string{}, in: map[string]*Link{}, out: map[string]*Link{}}
	for i, n := range fleetAll {
		dir := filepath.Join(t.TempDir(), n)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		f.relays[n] = &chaosRelay{name: n, dir: dir, addr: freeAddr(t, "127.0.32."+strconv.Itoa(11+i))}
	}
	_, port, _ := net.SplitHostPort(freeAddr(t, "127.0.30.11"))
	f.mxPort, _ = strconv.Atoi(port)
	for i, n := range append(append([]string{}, fleetMXs...), "backup") {
		ip := "127.0.30." + strconv.Itoa(11+i)
		l, err := NewLink(net.JoinHostPort(ip, port), f.relays[n].addr)
		if err != nil {
			t.Fatalf("link for %s on port %s: %v", n, port, err)
		}
		t.Cleanup(l.Close)
		f.mxIP[n], f.in[n] = ip, l
	}
	for i, n := range fleetMXs {
		l, err := NewLink("127.0.30."+strconv.Itoa(21+i)+":0", f.relays["store"].addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		f.out[n] = l
	}
	return f
}

// start writes every relay's configuration and starts it.
func (f *fleet) start(dnsAddr string) {
	t := f.t
	for _, n := range fleetAll {
		r := f.relays[n]
		var extra string
		switch n {
		case "s1", "s2":
			// Senders deliver by MX; a connection carries a few messages,
			// so that new connections spread the load over the MXs.
			extra = fmt.Sprintf("local_domains = [%q]\n", n+".test")
		case "backup":
			extra = "local_domains = []\nrelay_domains = [\"fleet.test\"]\n"
		case "store":
			extra = "local_domains = [\"fleet.test\"]\n"
		default:
			extra = fmt.Sprintf("local_domains = []\nrelay_domains = [\"fleet.test\"]\n[[route]]\ndomain = \"fleet.test\"\nto = %q\ntls = \"none\"\n", f.out[n].Addr())
		}
		host := n + ".fleet.test"
		if n == "s1" || n == "s2" {
			host = n + ".test"
		}
		cfg := fmt.Sprintf(`hostname = %q
data_dir = %q
relay_networks = ["127.0.0.0/8"]
users_file = "users"
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = "admin.sock"
[dns]
servers = [%q]
timeout = "2s"
mx_port = %d
[mta_sts]
enabled = false
[queue]
retry_min = "200ms"
retry_max = "2s"
lifetime = "24h"
delay_warning = "0"
max_messages_per_connection = 5
`, host, r.dir, r.addr, dnsAddr, f.mxPort)
		// The top-level keys must come before the first table.
		top, rest, _ := strings.Cut(extra, "[[route]]")
		cfg = top + cfg
		if rest != "" {
			cfg += "[[route]]" + rest
		}
		r.writeConfig(t, cfg, fleetUsers)
		r.p = startProc(t, r.cfg, r.addr)
	}
}

func (f *fleet) restart(n string) {
	r := f.relays[n]
	r.p = startProc(f.t, r.cfg, r.addr)
}

func (f *fleet) allLinks() []*Link {
	var ls []*Link
	for _, n := range append(append([]string{}, fleetMXs...), "backup") {
		ls = append(ls, f.in[n])
	}
	for _, n := range fleetMXs {
		ls = append(ls, f.out[n])
	}
	return ls
}

func (f *fleet) sockets() map[string]string {
	socks := map[string]string{}
	for _, n := range fleetAll {
		socks[n] = filepath.Join(f.relays[n].dir, "admin.sock")
	}
	return socks
}

// checkLogs fails the test on a panic in any relay's log (SIGKILL is the
// test's; a panic is a bug), and says how many re-sends each relay
// answered without storing a second copy.
func (f *fleet) checkLogs() string {
	var again []string
	for _, n := range fleetAll {
		logText, _ := os.ReadFile(f.relays[n].cfg + ".log")
		if k := bytes.Count(logText, []byte("accepted again, not stored twice")); k > 0 {
			again = append(again, fmt.Sprintf("%s %d", n, k))
		}
		if i := bytes.Index(logText, []byte("panic:")); i >= 0 {
			f.t.Errorf("relay %s panicked: %.2000s", n, logText[i:])
		} else if i := bytes.Index(logText, []byte("fatal error:")); i >= 0 {
			f.t.Errorf("relay %s died: %.2000s", n, logText[i:])
		}
	}
	return strings.Join(again, ", ")
}

type storeCount struct{ stray int }

// readStore reads the store's mailboxes (the relay stopped) and records
// each copy with the message its token names.
func (f *fleet) readStore(byTok map[string]*fleetMsg) storeCount {
	var c storeCount
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(f.relays["store"].dir, "spool"), GCInterval: -1})
	if err != nil {
		f.t.Fatalf("store: open spool: %v", err)
	}
	defer sp.Close()
	for _, u := range fleetUsers {
		for _, raw := range spoolMailbox(f.t, sp, u) {
			m := byTok[fleetTokRE.FindString(raw)]
			if m == nil {
				c.stray++
				continue
			}
			var path []string
			for _, by := range byRE.FindAllStringSubmatch(raw, -1) {
				path = append(path, by[1])
			}
			m.copies = append(m.copies, strings.Join(path, " "))
		}
	}
	return c
}
