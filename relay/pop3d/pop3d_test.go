package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBackend is an in-memory Backend: users with passwords, each with a
// list of messages, and the lock RFC 1939 asks for.
type fakeBackend struct {
	mu     sync.Mutex
	pass   map[string]string
	boxes  map[string][]fakeMsg
	locked map[string]bool
	nextID int
	closed chan string // receives the user at each Maildrop.Close
}

type fakeMsg struct {
	uid  string
	data []byte
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		pass:   map[string]string{"alice": "secret pw", "bob": "pw"},
		boxes:  map[string][]fakeMsg{},
		locked: map[string]bool{},
		closed: make(chan string, 100),
	}
}

func (b *fakeBackend) add(user string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	b.boxes[user] = append(b.boxes[user], fakeMsg{uid: "uid" + strconv.Itoa(b.nextID), data: data})
}

func (b *fakeBackend) count(user string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.boxes[user])
}

func (b *fakeBackend) Login(c ConnInfo, user, pass string) (Maildrop, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.pass[user]; !ok || p != pass {
		return nil, ErrAuthFailed
	}
	if b.locked[user] {
		return nil, fmt.Errorf("user %s: %w", user, ErrInUse)
	}
	b.locked[user] = true
	return &fakeDrop{b: b, user: user, msgs: slices.Clone(b.boxes[user])}, nil
}

type fakeDrop struct {
	b    *fakeBackend
	user string
	msgs []fakeMsg
}

func (d *fakeDrop) Messages() ([]MessageInfo, error) {
	var out []MessageInfo
	for _, m := range d.msgs {
		out = append(out, MessageInfo{UID: m.uid, Size: int64(len(m.data))})
	}
	return out, nil
}

func (d *fakeDrop) Message(i int) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(d.msgs[i].data)), nil
}

func (d *fakeDrop) Delete(idx []int) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	gone := map[string]bool{}
	for _, i := range idx {
		gone[d.msgs[i].uid] = true
	}
	d.b.boxes[d.user] = slices.DeleteFunc(d.b.boxes[d.user], func(m fakeMsg) bool { return gone[m.uid] })
	return nil
}

func (d *fakeDrop) Close() {
	d.b.mu.Lock()
	delete(d.b.locked, d.user)
	d.b.mu.Unlock()
	d.b.closed <- d.user
}

// startServer serves s on a fresh port of 127.0.0.61 until the test ends.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	if s.Hostname == "" {
		s.Hostname = "pop.test"
	}
	l, err := net.Listen("tcp", "127.0.0.61:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(l); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })
	return l.Addr().String()
}

// tclient speaks raw POP3 for the tests.
type tclient struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, addr string) *tclient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &tclient{t: t, nc: nc, r: bufio.NewReader(nc)}
	if g := c.line(); !strings.HasPrefix(g, "+OK pop.test POP3 server ready") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

func (c *tclient) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (after %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end with CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (c *tclient) send(line string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends line and returns the one-line response.
func (c *tclient) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

// expect sends line and fails unless the response starts with want.
func (c *tclient) expect(line, want string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%s: got %q, want %q...", line, got, want)
	}
	return got
}

// multi sends line, expects +OK and returns the unstuffed body of the
// multi-line response, CRLFs included.
func (c *tclient) multi(line string) (string, []byte) {
	c.t.Helper()
	first := c.expect(line, "+OK")
	var body []byte
	for {
		l := c.line()
		if l == "." {
			return first, body
		}
		l = strings.TrimPrefix(l, ".") // undo byte-stuffing
		body = append(append(body, l...), '\r', '\n')
	}
}

// closed reports whether the server has closed the connection.
func (c *tclient) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil
}

func login(t *testing.T, addr, user, pass string) *tclient {
	t.Helper()
	c := dial(t, addr)
	c.expect("USER "+user, "+OK")
	c.expect("PASS "+pass, "+OK")
	return c
}

const msg1 = "From: a@a.test\r\nSubject: one\r\n\r\nline 1\r\n.starts with a dot\r\n..two dots\r\nline 4\r\n"
const msg2 = "Subject: two\r\n\r\nbody\r\n"

func TestCommands(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	b.add("alice", []byte(msg2))
	b.add("alice", []byte("no final newline"))
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true})
	c := dial(t, addr)
	c.expect("NOOP", "-ERR") // not before login
	c.expect("STAT", "-ERR")
	c.expect("PASS secret pw", "-ERR Send USER first")
	c.expect("USER alice", "+OK")
	total := len(msg1) + len(msg2) + len("no final newline")
	c.expect("pass secret pw", fmt.Sprintf("+OK Logged in, 3 messages (%d octets)", total)) // case-insensitive keyword; spaces in the password
	c.expect("STAT", fmt.Sprintf("+OK 3 %d", total))
	if first, body := c.multi("LIST"); first != fmt.Sprintf("+OK 3 messages (%d octets)", total) ||
		string(body) != fmt.Sprintf("1 %d\r\n2 %d\r\n3 16\r\n", len(msg1), len(msg2)) {
		t.Errorf("LIST: %q %q", first, body)
	}
	c.expect("LIST 2", fmt.Sprintf("+OK 2 %d", len(msg2)))
	c.expect("LIST 4", "-ERR No such message")
	c.expect("LIST 0", "-ERR Invalid message number")
	c.expect("LIST +1", "-ERR Invalid message number")
	c.expect("LIST x", "-ERR Invalid message number")
	if _, body := c.multi("UIDL"); string(body) != "1 uid1\r\n2 uid2\r\n3 uid3\r\n" {
		t.Errorf("UIDL: %q", body)
	}
	c.expect("UIDL 3", "+OK 3 uid3")
	if first, body := c.multi("RETR 1"); first != fmt.Sprintf("+OK %d octets", len(msg1)) || string(body) != msg1 {
		t.Errorf("RETR 1: %q %q", first, body)
	}
	if _, body := c.multi("RETR 3"); string(body) != "no final newline\r\n" {
		t.Errorf("RETR of a message without a final CRLF: %q", body)
	}
	if _, body := c.multi("TOP 1 0"); string(body) != "From: a@a.test\r\nSubject: one\r\n\r\n" {
		t.Errorf("TOP 1 0: %q", body)
	}
	if _, body := c.multi("TOP 1 2"); string(body) != "From: a@a.test\r\nSubject: one\r\n\r\nline 1\r\n.starts with a dot\r\n" {
		t.Errorf("TOP 1 2: %q", body)
	}
	if _, body := c.multi("TOP 1 99"); string(body) != msg1 {
		t.Errorf("TOP 1 99: %q", body)
	}
	c.expect("TOP 1", "-ERR Syntax")
	c.expect("TOP 1 -1", "-ERR Invalid number of lines")
	c.expect("DELE 2", "+OK")
	c.expect("DELE 2", "-ERR Message 2 is deleted")
	c.expect("RETR 2", "-ERR Message 2 is deleted")
	c.expect("LIST 2", "-ERR Message 2 is deleted")
	c.expect("STAT", fmt.Sprintf("+OK 2 %d", total-len(msg2)))
	if _, body := c.multi("LIST"); string(body) != fmt.Sprintf("1 %d\r\n3 16\r\n", len(msg1)) {
		t.Errorf("LIST after DELE 2: %q", body)
	}
	c.expect("RSET", fmt.Sprintf("+OK 3 messages (%d octets)", total))
	c.expect("RETR 2", "+OK")
	for c.line() != "." {
	}
	c.expect("NOOP", "+OK")
	c.expect("USER bob", "-ERR Already logged in")
	c.expect("FROB", "-ERR unknown command")
	c.expect("DELE 1", "+OK")
	c.expect("DELE 3", "+OK")
	c.expect("QUIT", "+OK pop.test POP3 server signing off (1 messages left)")
	if !c.closed() {
		t.Error("connection still open after QUIT")
	}
	<-b.closed
	if b.count("alice") != 1 || string(b.boxes["alice"][0].data) != msg2 {
		t.Errorf("after DELE 1, DELE 3, QUIT: %q", b.boxes["alice"])
	}
}

func TestCapaAndPlaintextRefusal(t *testing.T) {
	b := newFakeBackend()
	addr := startServer(t, &Server{Backend: b})
	c := dial(t, addr)
	_, capa := c.multi("CAPA")
	for _, want := range []string{"TOP\r\n", "UIDL\r\n", "RESP-CODES\r\n", "PIPELINING\r\n"} {
		if !bytes.Contains(capa, []byte(want)) {
			t.Errorf("CAPA lacks %q: %q", want, capa)
		}
	}
	if bytes.Contains(capa, []byte("USER")) || bytes.Contains(capa, []byte("STLS")) {
		t.Errorf("CAPA without TLS and without allow_insecure_auth offers USER or STLS: %q", capa)
	}
	c.expect("USER alice", "-ERR [AUTH] Plaintext login is not allowed without TLS")
	c.expect("PASS secret pw", "-ERR [AUTH] Plaintext login")
	c.expect("STLS", "-ERR STLS not available")
	c.expect("QUIT", "+OK")
}

func TestInUse(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true, AuthFailureDelay: time.Millisecond})
	first := login(t, addr, "alice", "secret pw")
	second := dial(t, addr)
	second.expect("USER alice", "+OK")
	second.expect("PASS secret pw", "-ERR [IN-USE] ")
	// A wrong password is not told whether the mailbox is in use.
	second.expect("USER alice", "+OK")
	second.expect("PASS wrong", "-ERR [AUTH] ")
	first.expect("QUIT", "+OK")
	<-b.closed
	second.expect("USER alice", "+OK")
	second.expect("PASS secret pw", "+OK Logged in, 1 messages")
}

func TestDropDeletesNothing(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	b.add("alice", []byte(msg2))
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true})
	c := login(t, addr, "alice", "secret pw")
	c.expect("DELE 1", "+OK")
	c.expect("DELE 2", "+OK")
	c.nc.Close() // no QUIT
	select {
	case <-b.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("maildrop not closed after the connection dropped")
	}
	if n := b.count("alice"); n != 2 {
		t.Fatalf("DELE then a dropped connection left %d messages, want 2", n)
	}
	// And the next session sees both, with the same UIDs.
	c = login(t, addr, "alice", "secret pw")
	if _, body := c.multi("UIDL"); string(body) != "1 uid1\r\n2 uid2\r\n" {
		t.Errorf("UIDL in the next session: %q", body)
	}
}

func TestLargeRetrByteExact(t *testing.T) {
	// 10 MiB of lines of random printable bytes, many starting with '.',
	// some lone "." lines that would end the response if not stuffed.
	rng := mrand.New(mrand.NewPCG(1, 2))
	var m bytes.Buffer
	m.WriteString("Subject: big\r\n\r\n")
	for m.Len() < 10<<20 {
		switch rng.IntN(10) {
		case 0:
			m.WriteString(".\r\n")
		case 1:
			m.WriteString("..")
		}
		n := rng.IntN(200)
		for i := 0; i < n; i++ {
			m.WriteByte(byte(' ' + rng.IntN(95)))
		}
		m.WriteString("\r\n")
	}
	big := m.Bytes()
	b := newFakeBackend()
	b.add("alice", big)
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true})
	c := login(t, addr, "alice", "secret pw")
	c.expect("LIST 1", fmt.Sprintf("+OK 1 %d", len(big)))
	_, got := c.multi("RETR 1")
	if !bytes.Equal(got, big) {
		t.Fatalf("RETR of %d bytes returned %d bytes, not the same", len(big), len(got))
	}
}

func TestFailedLoginsSlowDownThenDisconnect(t *testing.T) {
	b := newFakeBackend()
	base := 60 * time.Millisecond
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true, AuthFailureDelay: base, MaxAuthFailures: 3})
	c := dial(t, addr)
	var took []time.Duration
	for i := 0; i < 3; i++ {
		c.expect("USER alice", "+OK")
		start := time.Now()
		got := c.cmd("PASS nope")
		took = append(took, time.Since(start))
		if !strings.HasPrefix(got, "-ERR [AUTH] Invalid user name or password") {
			t.Fatalf("failure %d: %q", i+1, got)
		}
	}
	if !c.closed() {
		t.Error("connection still open after 3 failed logins")
	}
	for i, want := range []time.Duration{base, 2 * base, 4 * base} {
		if took[i] < want {
			t.Errorf("failure %d answered after %v, want at least %v", i+1, took[i], want)
		}
	}
	// Reconnecting does not start over: the next failure waits longer still.
	c = dial(t, addr)
	c.expect("USER bob", "+OK")
	start := time.Now()
	c.expect("PASS nope", "-ERR [AUTH]")
	if d := time.Since(start); d < 8*base {
		t.Errorf("first failure on a new connection answered after %v, want at least %v", d, 8*base)
	}
	// A success resets the count for the address.
	c.expect("USER bob", "+OK")
	c.expect("PASS pw", "+OK")
	c.expect("QUIT", "+OK")
	c = dial(t, addr)
	c.expect("USER bob", "+OK")
	start = time.Now()
	c.expect("PASS nope", "-ERR [AUTH]")
	if d := time.Since(start); d > 3*base {
		t.Errorf("failure after a successful login waited %v, want about %v", d, base)
	}
}

func TestNoDelayOfItsOwn(t *testing.T) {
	b := newFakeBackend()
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true, AuthFailureDelay: -1, MaxAuthFailures: 2})
	c := dial(t, addr)
	start := time.Now()
	c.expect("USER alice", "+OK")
	c.expect("PASS nope", "-ERR [AUTH]")
	c.expect("USER alice", "+OK")
	c.expect("PASS nope", "-ERR [AUTH] Invalid user name or password; too many failures")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("two failures took %v with AuthFailureDelay < 0", d)
	}
	if !c.closed() {
		t.Error("connection open after MaxAuthFailures")
	}
}

func TestBadInput(t *testing.T) {
	b := newFakeBackend()
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true, MaxErrors: 5})
	c := dial(t, addr)
	c.expect("", "-ERR empty command")
	c.expect("USER "+strings.Repeat("x", 600), "-ERR Command line too long")
	c.expect("LIST\x00", "-ERR")
	c.expect("RETRIEVE 1", "-ERR unknown command")
	// The fifth error ends the session.
	c.send("XYZ")
	if got := c.line(); got != "-ERR unknown command" {
		t.Fatalf("got %q", got)
	}
	if got := c.line(); got != "-ERR Too many errors, closing connection" {
		t.Fatalf("got %q", got)
	}
	if !c.closed() {
		t.Error("connection open after too many errors")
	}
}

func TestPipelining(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg2))
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true})
	c := dial(t, addr)
	c.send("USER alice\r\nPASS secret pw\r\nSTAT\r\nRETR 1\r\nQUIT")
	for _, want := range []string{"+OK Send PASS", "+OK Logged in", "+OK 1 ", "+OK", "Subject: two", "", "body", ".", "+OK pop.test POP3 server signing off"} {
		if got := c.line(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	addr := startServer(t, &Server{Backend: b, AllowInsecureAuth: true, IdleTimeout: 300 * time.Millisecond})
	c := login(t, addr, "alice", "secret pw")
	c.expect("DELE 1", "+OK")
	if got := c.line(); !strings.HasPrefix(got, "-ERR Autologout") {
		t.Fatalf("after idling: %q", got)
	}
	<-b.closed
	if b.count("alice") != 1 {
		t.Error("a timed-out session deleted its marked message")
	}
}

func TestShutdownClosesIdleSessions(t *testing.T) {
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	s := &Server{Backend: b, AllowInsecureAuth: true}
	addr := startServer(t, s)
	c := login(t, addr, "alice", "secret pw")
	c.expect("DELE 1", "+OK")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := c.line(); !strings.HasPrefix(got, "-ERR [SYS/TEMP] Server shutting down") {
		t.Errorf("idle session told %q", got)
	}
	if b.count("alice") != 1 {
		t.Error("shutdown deleted a marked message")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

// selfSigned makes a certificate for 127.0.0.61 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pop.test"},
		DNSNames:     []string{"pop.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.61")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestSTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	b := newFakeBackend()
	b.add("alice", []byte(msg1))
	addr := startServer(t, &Server{Backend: b, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	c := dial(t, addr)
	_, capa := c.multi("CAPA")
	if !bytes.Contains(capa, []byte("STLS\r\n")) || bytes.Contains(capa, []byte("USER")) {
		t.Errorf("CAPA before TLS: %q", capa)
	}
	c.expect("USER alice", "-ERR [AUTH]")
	// A command pipelined in plaintext after STLS must be dropped, not run
	// inside TLS.
	c.send("STLS\r\nUSER mallory")
	if got := c.line(); got != "+OK Begin TLS negotiation" {
		t.Fatalf("STLS: %q", got)
	}
	tc := tls.Client(c.nc, &tls.Config{RootCAs: pool, ServerName: "pop.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.nc, c.r = tc, bufio.NewReader(tc)
	_, capa = c.multi("CAPA")
	if !bytes.Contains(capa, []byte("USER\r\n")) || bytes.Contains(capa, []byte("STLS")) {
		t.Errorf("CAPA inside TLS: %q", capa)
	}
	c.expect("PASS secret pw", "-ERR Send USER first") // the plaintext USER was forgotten
	c.expect("STLS", "-ERR TLS already active")
	c.expect("USER alice", "+OK")
	c.expect("PASS secret pw", "+OK Logged in, 1 messages")
	if _, body := c.multi("RETR 1"); string(body) != msg1 {
		t.Errorf("RETR over TLS: %q", body)
	}
	c.expect("QUIT", "+OK")
	// The maildrop is unlocked when the session ends, a moment after the
	// +OK: the server closing the connection says it has.
	if !c.closed() {
		t.Fatal("the server kept the connection open after QUIT")
	}

	// Implicit TLS: a listener wrapped by the caller.
	s := &Server{Hostname: "pop.test", Backend: b, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	l, err := net.Listen("tcp", "127.0.0.61:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(tls.NewListener(l, s.TLSConfig))
	defer s.Close()
	tc, err = tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "pop.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ic := &tclient{t: t, nc: tc, r: bufio.NewReader(tc)}
	ic.line()
	ic.expect("USER alice", "+OK")
	ic.expect("PASS secret pw", "+OK")
}

func TestMaxConnections(t *testing.T) {
	b := newFakeBackend()
	addr := startServer(t, &Server{Backend: b, MaxConnections: 1})
	dial(t, addr)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, _ := bufio.NewReader(nc).ReadString('\n')
	if !strings.HasPrefix(l, "-ERR [SYS/TEMP] Too many connections") {
		t.Errorf("second connection over the limit: %q", l)
	}
}

func TestWriteDotStuffed(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"a\r\n.b\r\n..\r\n", "a\r\n..b\r\n...\r\n.\r\n"},
		{"a\n.b", "a\n..b\r\n.\r\n"},
		{"x.\r\n", "x.\r\n.\r\n"},
	} {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeDotStuffed(w, strings.NewReader(tc.in), -1); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if buf.String() != tc.want {
			t.Errorf("writeDotStuffed(%q) = %q, want %q", tc.in, buf.String(), tc.want)
		}
	}
}

func TestTopLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 0, "A: 1\r\n\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 1, "A: 1\r\n\r\nb1\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2", 5, "A: 1\r\n\r\nb1\r\nb2"},
		{"A: 1\r\nB: 2\r\n", 3, "A: 1\r\nB: 2\r\n"},
		{"\r\nbody\r\n", 0, "\r\n"},
		{"A: 1\n\nb\n", 0, "A: 1\n\n"},
	} {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeDotStuffed(w, strings.NewReader(tc.in), tc.n); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		want := tc.want
		if !strings.HasSuffix(want, "\n") {
			want += "\r\n"
		}
		if got := buf.String(); got != want+".\r\n" {
			t.Errorf("TOP %d of %q = %q, want %q", tc.n, tc.in, got, want+".\r\n")
		}
	}
}

// TestWriteDotStuffedLongLines: lines longer than the reader's buffer
// stream through in pieces, stuffed only at their start, and TOP counts
// them as one line each.
func TestWriteDotStuffedLongLines(t *testing.T) {
	long := "." + strings.Repeat("x", 100<<10)
	in := "A: 1\r\n\r\n" + long + "\r\n" + long + "\r\nlast\r\n"
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeDotStuffed(w, strings.NewReader(in), 1); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if want := "A: 1\r\n\r\n." + long + "\r\n.\r\n"; buf.String() != want {
		t.Errorf("TOP 1 of two 100 KiB lines: %d bytes, want %d", buf.Len(), len(want))
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		verb string
		args []string
		rest string
		err  error
	}{
		{line: "stat", verb: "STAT"},
		{line: "TOP 1 10", verb: "TOP", args: []string{"1", "10"}, rest: "1 10"},
		{line: "PASS  two  spaces ", verb: "PASS", rest: " two  spaces "},
		{line: "LIST 1 2 3", err: errTooManyArgs},
		{line: "USER " + strings.Repeat("u", 41), err: errArgumentTooBig},
		{line: "RE", err: errBadKeyword},
		{line: "RETR\x001", err: errBadKeyword},
		{line: "RETR 1\x00", err: errControlChars},
		{line: "", err: errEmptyCommand},
		{line: "ÜSER x", err: errBadKeyword},
	} {
		got, err := parseCommand(tc.line)
		if err != tc.err || (err == nil && (got.Verb != tc.verb || !slices.Equal(got.Args, tc.args) || got.Rest != tc.rest)) {
			t.Errorf("parseCommand(%q) = %+v, %v", tc.line, got, err)
		}
	}
}

// FuzzParseCommand checks that no input panics the parser and that what
// it accepts is a well-formed command.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"USER alice", "PASS a b c", "TOP 1 2", "LIST", "RETR 99999999999999999999", "uidl 1", "\x00", "PASS \t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parseCommand(line)
		if err != nil {
			return
		}
		if len(cmd.Verb) < 3 || len(cmd.Verb) > 4 || strings.ToUpper(cmd.Verb) != cmd.Verb {
			t.Fatalf("verb %q from %q", cmd.Verb, line)
		}
		if len(cmd.Args) > maxArgs || strings.ContainsAny(cmd.Rest, "\r\n\x00") {
			t.Fatalf("args %q rest %q from %q", cmd.Args, cmd.Rest, line)
		}
		for _, a := range cmd.Args {
			if a == "" || len(a) > maxArgLen || strings.ContainsAny(a, " \t") {
				t.Fatalf("argument %q from %q", a, line)
			}
		}
	})
}

// FuzzSession runs whole sessions on arbitrary input: the server must not
// panic, must answer every response line with +OK, -ERR or a multi-line
// body, must hang up in bounded time, and must delete nothing unless the
// client said QUIT.
func FuzzSession(f *testing.F) {
	f.Add([]byte("USER alice\r\nPASS secret pw\r\nDELE 1\r\nRETR 2\r\nTOP 2 0\r\nQUIT\r\n"))
	f.Add([]byte("USER alice\r\nPASS secret pw\r\nDELE 1\r\n"))
	f.Add([]byte("CAPA\r\nUSER alice\nPASS x\r\nSTLS\r\nLIST 1 2\r\n"))
	f.Fuzz(func(t *testing.T, input []byte) {
		b := newFakeBackend()
		b.add("alice", []byte(msg1))
		b.add("alice", []byte(msg2))
		s := &Server{Hostname: "pop.test", Backend: b, AllowInsecureAuth: true, AuthFailureDelay: time.Microsecond, IdleTimeout: 10 * time.Millisecond}
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(server); close(done) }()
		go func() { client.Write(input); client.Write([]byte("\r\n")) }()
		r := bufio.NewReader(client)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if !strings.HasSuffix(l, "\r\n") {
				t.Fatalf("response line without CRLF: %q", l)
			}
		}
		client.Close()
		<-done
		quit := bytes.Contains(bytes.ToUpper(input), []byte("QUIT"))
		if !quit && b.count("alice") != 2 {
			t.Fatalf("messages deleted without QUIT: %d left", b.count("alice"))
		}
	})
}
