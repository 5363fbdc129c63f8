package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/spool"
	"golang.org/x/crypto/bcrypt"
)

// node is one in-process relay with its own loopback address and data
// directory. Its hostname and only local domain is NAME.test.
type node struct {
	t    *testing.T
	name string
	addr string // SMTP listener, 127.0.0.x:port
	cfg  *config.Config
	r    *relay.Relay
	stop func()
	// realDNS: the relay resolves through its [dns] servers instead of
	// nxResolver (internet_test.go).
	realDNS bool
}

// newNode configures a relay NAME on ip; routes are added with route
// before start.
func newNode(t *testing.T, name, ip string) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = name + ".test"
	cfg.DataDir = t.TempDir()
	cfg.LocalDomains = []string{name + ".test"}
	cfg.SMTP.Listen = []string{freeAddr(t, ip)}
	cfg.POP3.Listen = nil
	cfg.Admin.Socket = ""
	cfg.Queue.RetryMin = 200 * time.Millisecond
	cfg.Queue.RetryMax = 2 * time.Second
	cfg.Queue.Lifetime = time.Hour
	cfg.UsersFile = filepath.Join(cfg.DataDir, "users")
	for _, u := range []string{"alice", "bob"} {
		if err := users.Add(cfg.UsersFile, u, "pw", bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
	}
	return &node{t: t, name: name, addr: cfg.SMTP.Listen[0], cfg: cfg}
}

// route sends mail for domain to addr (another node or a Link).
func (n *node) route(domain, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		n.t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	n.cfg.Routes = append(n.cfg.Routes, config.Route{Domain: domain, To: addr, Host: host, Port: p, TLS: config.TLSNone})
}

// start runs the relay until the test ends (or stop is called).
func (n *node) start() *node {
	n.t.Helper()
	logOut := io.Discard
	if os.Getenv("RELAY_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	opts := relay.Options{Logger: slog.New(slog.NewTextHandler(logOut, nil)).With("node", n.name), Resolver: nxResolver{}}
	if n.realDNS {
		opts.Resolver = nil
	}
	r, err := relay.New(n.cfg, opts)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := r.Run(ctx); err != nil {
			n.t.Errorf("node %s: %v", n.name, err)
		}
		close(done)
	}()
	n.r = r
	stopped := false
	n.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	n.t.Cleanup(n.stop)
	return n
}

// link puts a fault-injecting proxy on listen in front of n.
func link(t *testing.T, listenIP string, to *node) *Link {
	t.Helper()
	l, err := NewLink(listenIP+":0", to.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

var subjectRE = regexp.MustCompile(`(?m)^Subject: (.*)\r$`)

// mailbox returns the subjects of the messages in user's mailbox.
func (n *node) mailbox(user string) []string {
	n.t.Helper()
	sp := n.r.Spool()
	entries, err := sp.Mailbox(user)
	if err != nil {
		n.t.Fatal(err)
	}
	var subjects []string
	for _, e := range entries {
		b, err := sp.MailboxMessage(user, e.Seq)
		if err != nil {
			n.t.Fatal(err)
		}
		if m := subjectRE.FindSubmatch(b); m != nil {
			subjects = append(subjects, string(m[1]))
		} else {
			subjects = append(subjects, "")
		}
	}
	return subjects
}

// queued returns the messages in n's queue.
func (n *node) queued() []*spool.Message {
	n.t.Helper()
	var out []*spool.Message
	if err := n.r.Spool().List(func(m *spool.Message) error { out = append(out, m); return nil }); err != nil {
		n.t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// send submits a message with the given subject; it fails the test on a
// refusal.
func send(t *testing.T, addr, to, subject string) string {
	t.Helper()
	id, err := sendOne(addr, "sender@a.test", to, fmt.Sprintf("Subject: %s\r\nMessage-ID: <%s@a.test>\r\n\r\nbody of %s\r\n", subject, subject, subject))
	if err != nil {
		t.Fatalf("send %q: %v", subject, err)
	}
	return id
}

// countCopies maps each subject to the number of times it appears.
func countCopies(subjects []string) map[string]int {
	m := map[string]int{}
	for _, s := range subjects {
		m[s]++
	}
	return m
}

// nxResolver is the DNS of the test network: every name that no
// [[route]] covers does not exist.
type nxResolver struct{}

func (nxResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (nxResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
