package integration

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/internal/redistest"
)

// arrivalSink is a next hop that notes when each message arrives. Its
// listener is open from the start, but it greets no one until serve:
// the relays' sessions wait in its backlog meanwhile, so that all the
// mail is queued before the first message can go.
type arrivalSink struct {
	l   net.Listener
	srv *smtp.Server
	mu  sync.Mutex
	got []arrival
}

// arrival is one message at the hop: when, and from which relay (the
// name it gave in EHLO).
type arrival struct {
	at   time.Time
	from string
}

func newArrivalSink(t *testing.T, ip string) *arrivalSink {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	k := &arrivalSink{l: l}
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "hop.test"
	t.Cleanup(func() { k.srv.Close(); l.Close() })
	return k
}

func (k *arrivalSink) serve() { go k.srv.Serve(k.l) }

func (k *arrivalSink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return arrivalSession{k, c}, nil
}

type arrivalSession struct {
	k *arrivalSink
	c *smtp.Conn
}

func (arrivalSession) Reset()                               {}
func (arrivalSession) Logout() error                        { return nil }
func (arrivalSession) Mail(string, *smtp.MailOptions) error { return nil }
func (arrivalSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s arrivalSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.k.mu.Lock()
	s.k.got = append(s.k.got, arrival{time.Now(), s.c.Hostname()})
	s.k.mu.Unlock()
	return nil
}

// between counts the messages that arrived in [from, to), in all and
// by relay.
func (k *arrivalSink) between(from, to time.Time) (int, map[string]int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, by := 0, map[string]int{}
	for _, a := range k.got {
		if !a.at.Before(from) && a.at.Before(to) {
			n++
			by[a.from]++
		}
	}
	return n, by
}

// fleetRate runs three relays that each send perRelay messages to one
// hop at max_message_rate = "30/s" (sharing it through redis when
// redis is not ""), and returns the rate the hop sees over window,
// skip after the hop opens (the sessions already waiting when it opens
// each carry a message at once), in all and from each relay. onOpen,
// if set, runs as the hop opens.
func fleetRate(t *testing.T, ips [3]string, hopIP, redis, prefix string, perRelay int, skip, window time.Duration, onOpen func()) (float64, map[string]float64) {
	t.Helper()
	hop := newArrivalSink(t, hopIP)
	var nodes []*node
	for i, ip := range ips {
		n := newNode(t, fmt.Sprintf("r%d", i+1), ip)
		n.route("b.test", hop.l.Addr().String())
		n.cfg.Routes[0].MaxMessageRate.N, n.cfg.Routes[0].MaxMessageRate.Per = 30, time.Second
		n.cfg.Fleet.Redis, n.cfg.Fleet.RedisKeyPrefix = redis, prefix
		nodes = append(nodes, n.start())
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); sendMany(t, n.addr, n.name+"-", perRelay) }()
	}
	wg.Wait()
	if onOpen != nil {
		onOpen()
	}
	open := time.Now()
	hop.serve()
	from := open.Add(skip)
	time.Sleep(time.Until(from.Add(window)))
	got, by := hop.between(from, from.Add(window))
	var perSecond []int
	for s := from; s.Before(from.Add(window)); s = s.Add(time.Second) {
		n, _ := hop.between(s, s.Add(time.Second))
		perSecond = append(perSecond, n)
	}
	rate := float64(got) / window.Seconds()
	t.Logf("3 relays x 30/s, redis %q: %d messages at the hop in %v after the first %v: %.1f msg/s (per second: %v; by relay: %v)",
		redis, got, window, skip, rate, perSecond, by)
	rates := map[string]float64{}
	for _, n := range nodes {
		if by[n.cfg.Hostname] == 0 {
			t.Errorf("relay %s sent nothing in the window (by relay: %v)", n.cfg.Hostname, by)
		}
		rates[n.cfg.Hostname] = float64(by[n.cfg.Hostname]) / window.Seconds()
	}
	return rate, rates
}

// TestSharedLimits: three relays with max_message_rate = "30/s" to one
// hop send it at most 33 messages a second between them when they share
// the limit through Redis ([fleet] redis), and about 90 when they do not
// or when their Redis is gone (each then at most 30).
func TestSharedLimits(t *testing.T) {
	srv := redistest.Start(t, "127.0.31.1")
	ips := [3]string{"127.0.31.11", "127.0.31.12", "127.0.31.13"}
	t.Run("shared", func(t *testing.T) {
		rate, _ := fleetRate(t, ips, "127.0.31.10", srv.Addr, "shared:", 100, time.Second, 5*time.Second, nil)
		if rate > 33 || rate < 20 {
			t.Errorf("with [fleet] redis the hop got %.1f msg/s, want 30 (at most 33)", rate)
		}
	})
	t.Run("per relay", func(t *testing.T) {
		rate, _ := fleetRate(t, ips, "127.0.31.10", "", "", 100, 500*time.Millisecond, 2*time.Second, nil)
		if rate < 60 {
			t.Errorf("without [fleet] redis the hop got %.1f msg/s, want about 90 (30/s from each relay)", rate)
		}
	})
	// Redis dies with the mail queued: delivery goes on, each relay at
	// its own rate.
	t.Run("redis down", func(t *testing.T) {
		rate, by := fleetRate(t, ips, "127.0.31.10", srv.Addr, "down:", 100, 500*time.Millisecond, 2*time.Second, srv.Stop)
		if rate < 60 {
			t.Errorf("with Redis down the hop got %.1f msg/s, want about 90 (30/s from each relay)", rate)
		}
		for name, r := range by {
			if r > 33 {
				t.Errorf("with Redis down relay %s sent %.1f msg/s, more than its 30/s", name, r)
			}
		}
	})
}
