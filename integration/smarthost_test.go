package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
)

// The outbound tests (issue 19) use 127.0.27.0/24.

// testCA is a certificate authority made for one test: it signs server
// certificates, and its certificate is what a route's tls_ca_file names.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := writeFile(t, t.TempDir(), "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a server certificate for name, signed by ca, and its key.
func (ca *testCA) issue(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath = writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPath = writeFile(t, dir, name+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certPath, keyPath
}

// passwordFile writes pw into a file of mode 0600.
func passwordFile(t *testing.T, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "smarthost.pw")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// smarthostRoute is a route for domain through the smarthost at to
// (several: failover), with AUTH as user.
func smarthostRoute(t *testing.T, domain, user, pwFile, caFile, serverName string, to ...string) config.Route {
	t.Helper()
	rt := config.Route{Domain: domain, To: strings.Join(to, ", "), TLS: config.TLSRequire,
		AuthUser: user, AuthPasswordFile: pwFile, TLSCAFile: caFile, TLSServerName: serverName}
	for _, a := range to {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		rt.Hosts = append(rt.Hosts, config.RouteHost{Host: host, Port: p})
	}
	rt.Host, rt.Port = rt.Hosts[0].Host, rt.Hosts[0].Port
	return rt
}

// smarthostNet is a sender a, a smarthost b that relays only for a logged
// in user (a is not in its relay_networks) over STARTTLS with a
// certificate from a test CA, and c, where the mail ends.
type smarthostNet struct {
	a, b, c *node
	ca      *testCA
}

func newSmarthostNet(t *testing.T, pw string, extra func(rt *config.Route)) *smarthostNet {
	t.Helper()
	ca := newTestCA(t)
	c := newNode(t, "c", "127.0.27.4").start()
	b := newNode(t, "b", "127.0.27.3")
	b.cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}
	b.cfg.SenderDomains = map[string][]string{"alice": {"*"}}
	b.cfg.TLS.Cert, b.cfg.TLS.Key = ca.issue(t, t.TempDir(), "smtp.b.test")
	b.route("c.test", c.addr)
	b.start()
	a := newNode(t, "a", "127.0.27.2")
	a.cfg.Admin.Socket = filepath.Join(a.cfg.DataDir, "admin.sock")
	rt := smarthostRoute(t, "c.test", "alice", passwordFile(t, pw), ca.file, "smtp.b.test", b.addr)
	rt.SourceIP = netip.MustParseAddr("127.0.27.2")
	rt.EHLOName = "out.a.test"
	if extra != nil {
		extra(&rt)
	}
	a.cfg.Routes = append(a.cfg.Routes, rt)
	a.start()
	return &smarthostNet{a: a, b: b, c: c, ca: ca}
}

// TestSmarthostAuth: a route with auth_user delivers through a smarthost
// that relays only for logged-in users, over STARTTLS verified with the
// route's CA file and server name, from the route's source_ip with its
// EHLO name.
func TestSmarthostAuth(t *testing.T) {
	n := newSmarthostNet(t, "pw", nil)
	send(t, n.a.addr, "alice@c.test", "through the smarthost")
	waitFor(t, 15*time.Second, "delivery at c", func() bool { return len(n.c.mailbox("alice")) == 1 })
	sp := n.c.r.Spool()
	entries, err := sp.Mailbox("alice")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sp.MailboxMessage("alice", entries[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	// b's Received field: from the EHLO name and the source address,
	// authenticated, over TLS.
	if !strings.Contains(string(raw), "from out.a.test ([127.0.27.2])") {
		t.Errorf("b's Received field does not show ehlo_name and source_ip:\n%s", raw)
	}
	if !strings.Contains(string(raw), "ESMTPSA") {
		t.Errorf("b's Received field does not show an authenticated TLS session (ESMTPSA):\n%s", raw)
	}
}

// TestSmarthostWrongPassword: a refused login defers, and `relay queue
// show` has the smarthost's reply.
func TestSmarthostWrongPassword(t *testing.T) {
	n := newSmarthostNet(t, "not the password", nil)
	id := send(t, n.a.addr, "alice@c.test", "wrong password")
	var m *spool.Message
	waitFor(t, 15*time.Second, "the deferral", func() bool {
		q := n.a.queued()
		if len(q) == 1 && q[0].Recipients[0].Status == spool.StatusDeferred {
			m = q[0]
			return true
		}
		return false
	})
	if got := m.Recipients[0].LastReply; !strings.Contains(got, "535 5.7.8") {
		t.Errorf("last reply %q, want the smarthost's 535 5.7.8", got)
	}
	if strings.Contains(m.Recipients[0].LastReply, "not the password") {
		t.Errorf("the password is in the reply: %q", m.Recipients[0].LastReply)
	}
	out := mustRun(t, nil, "queue", "show", id, "--admin", n.a.cfg.Admin.Socket)
	t.Log(out)
	if !strings.Contains(out, "535 5.7.8") || !strings.Contains(out, "deferred") {
		t.Errorf("queue show does not show the refused login:\n%s", out)
	}
	if len(n.c.mailbox("alice")) != 0 {
		t.Error("mail arrived without a login")
	}
}

// TestSmarthostFailover: the first next hop of the route refuses
// connections; the message goes through the second in the same attempt,
// without waiting for a retry.
func TestSmarthostFailover(t *testing.T) {
	dead := freeAddr(t, "127.0.27.5") // nothing listens there
	n := newSmarthostNet(t, "pw", func(rt *config.Route) {
		b := rt.Hosts[0]
		rt.Hosts = []config.RouteHost{{Host: "127.0.27.5", Port: mustPort(t, dead)}, b}
		rt.Host, rt.Port = rt.Hosts[0].Host, rt.Hosts[0].Port
	})
	// Retries are far away: only the first attempt can deliver in time.
	start := time.Now()
	id := send(t, n.a.addr, "alice@c.test", "failover")
	waitFor(t, 10*time.Second, "delivery at c", func() bool { return len(n.c.mailbox("alice")) == 1 })
	var sum *spool.Retired
	waitFor(t, 5*time.Second, "a's record of the delivery", func() bool {
		var err error
		sum, err = n.a.r.Spool().History(id)
		return err == nil
	})
	for _, r := range sum.Recipients {
		if r.Attempts != 1 {
			t.Errorf("delivered after %d attempts, want 1 (failover within the attempt)", r.Attempts)
		}
	}
	t.Logf("delivered through the second next hop in %v", time.Since(start).Round(time.Millisecond))
}

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
