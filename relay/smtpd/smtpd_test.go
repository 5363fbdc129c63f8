package smtpd

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
)

// recMsg is one message as the backend saw it.
type recMsg struct {
	helo     string
	tls      bool
	authUser string
	from     envelope.Path
	params   envelope.MailParams
	rcpts    []envelope.Path
	rparams  []envelope.RcptParams
	body     []byte
}

// recBackend records what reaches the policy layer; it refuses recipients
// whose local part is "nobody" and panics on a recipient "panic".
type recBackend struct {
	mu   sync.Mutex
	msgs []recMsg
	n    int
}

func (b *recBackend) NewSession(ConnInfo) (Session, error) { return &recSession{b: b}, nil }

func (b *recBackend) messages() []recMsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]recMsg(nil), b.msgs...)
}

type recSession struct {
	b    *recBackend
	cur  recMsg
	user string
	h    HelloInfo
}

func (s *recSession) Hello(h HelloInfo) error {
	if h.Name == "reject.test" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
	}
	s.h = h
	return nil
}

func (s *recSession) Auth(identity, user, pass string) error {
	switch {
	case user == "alice" && pass == "secret":
		s.user = user
		return nil
	case user == "temp":
		return ErrAuthTemporary
	}
	return errors.New("bad credentials")
}

func (s *recSession) Mail(from envelope.Path, p envelope.MailParams) error {
	s.cur = recMsg{helo: s.h.Name, tls: s.h.TLS != nil, authUser: s.user, from: from, params: p}
	return nil
}

func (s *recSession) Rcpt(to envelope.Path, p envelope.RcptParams) error {
	switch to.Local {
	case "nobody":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	case "panic":
		panic("backend bug")
	case "storage":
		return errors.New("disk on fire")
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	s.cur.rparams = append(s.cur.rparams, p)
	return nil
}

func (s *recSession) Data(r io.Reader) (string, error) {
	msg, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	s.cur.body = msg
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.msgs = append(s.b.msgs, s.cur)
	s.b.n++
	return fmt.Sprintf("Q%d", s.b.n), nil
}

func (s *recSession) Reset() { s.cur = recMsg{} }
func (s *recSession) Close() {}

// startServer runs srv on a loopback port and returns its address.
func startServer(t *testing.T, srv *Server) string {
	t.Helper()
	if srv.Backend == nil {
		srv.Backend = &recBackend{}
	}
	if srv.Hostname == "" {
		srv.Hostname = "mx.test"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// client is a raw-line SMTP client for asserting exact replies.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

// dial connects and reads the greeting (smtptest.Dial); this package's
// tests use their own reply helpers on the same connection.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	sc := smtptest.Dial(t, addr)
	return &client{t: t, nc: sc.Conn, r: sc.R}
}

// readReply reads one (possibly multi-line) reply and returns its last line.
func (c *client) readReply() string {
	c.t.Helper()
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v (got %q)", err, line)
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads a reply and checks its start (code and enhanced code).
func (c *client) expect(prefix string) string {
	c.t.Helper()
	got := c.readReply()
	if !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("want reply %q..., got %q", prefix, got)
	}
	return got
}

// cmd sends one command line and checks the reply.
func (c *client) cmd(line, want string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(want)
}

func TestReplies(t *testing.T) {
	long := strings.Repeat("x", DefaultMaxLineLength+10)
	tests := []struct {
		name  string
		steps [][2]string // command, expected reply prefix
	}{
		{"mail before helo", [][2]string{{"MAIL FROM:<a@b.test>", "503 5.5.1"}}},
		{"rcpt before mail", [][2]string{{"EHLO c.test", "250 "}, {"RCPT TO:<a@b.test>", "503 5.5.1"}}},
		{"data before rcpt", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test>", "250 2.1.0"}, {"DATA", "503 5.5.1"}}},
		{"data after all rcpts refused", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test>", "250 2.1.0"}, {"RCPT TO:<nobody@b.test>", "550 5.1.1 No such user"}, {"DATA", "554 5.5.1"}}},
		{"nested mail", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test>", "250 "}, {"MAIL FROM:<a@b.test>", "503 5.5.1"}}},
		{"unknown command", [][2]string{{"FOO bar", "500 5.5.1"}}},
		{"helo without name", [][2]string{{"HELO", "501 5.5.4"}, {"EHLO", "501 5.5.4"}}},
		{"helo refused by backend", [][2]string{{"EHLO reject.test", "550 5.7.1 go away"}}},
		{"mail syntax", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FRM:<a@b.test>", "501 5.5.2"}}},
		{"bad sender address", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@@b.test>", "501 5.1.7"}}},
		{"postmaster is no sender", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<postmaster>", "501 5.1.7"}}},
		{"bad recipient address", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<>", "250 "}, {"RCPT TO:<a b@c.test>", "501 5.1.3"}}},
		{"null recipient", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<>", "250 "}, {"RCPT TO:<>", "501 5.1.3"}}},
		{"postmaster recipient", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<>", "250 "}, {"RCPT TO:<Postmaster>", "250 2.1.5"}}},
		{"source route recipient", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<>", "250 "}, {"RCPT TO:<@a.test,@b.test:u@c.test>", "250 2.1.5"}}},
		{"utf8 without SMTPUTF8", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<jörg@b.test>", "553 5.6.7"}}},
		{"utf8 with SMTPUTF8", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<jörg@b.test> SMTPUTF8", "250 "}, {"RCPT TO:<łukasz@ü.test>", "250 "}}},
		{"unknown parameter", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> FOO=1", "555 5.5.4"}}},
		{"bad parameter value", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> BODY=9BIT", "501 5.5.4"}}},
		{"duplicate parameter", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> SIZE=1 SIZE=2", "501 5.5.4"}}},
		{"params need EHLO", [][2]string{{"HELO c.test", "250 "}, {"MAIL FROM:<a@b.test> SIZE=10", "555 5.5.4"}}},
		{"binarymime", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> BODY=BINARYMIME", "555 5.5.4"}}},
		{"size announced too big", [][2]string{{"EHLO c.test", "250 "}, {fmt.Sprintf("MAIL FROM:<a@b.test> SIZE=%d", DefaultMaxMessageSize+1), "552 5.3.4"}}},
		{"dsn params", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> RET=HDRS ENVID=abc+2Bd", "250 "}, {"RCPT TO:<u@c.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@c.test", "250 "}}},
		{"line too long", [][2]string{{long, "500 5.5.2"}, {"NOOP", "250 2.0.0"}}},
		{"rset noop vrfy help", [][2]string{{"RSET", "250 2.0.0"}, {"NOOP", "250 2.0.0"}, {"VRFY u", "252 2.5.0"}, {"VRFY", "501 5.5.4"}, {"EXPN list", "502 5.5.1"}, {"HELP", "214 2.0.0"}}},
		{"requiretls in clear", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> REQUIRETLS", "530 5.7.10"}}},
		{"by expired return", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> BY=0;R", "501 5.5.4"}, {"MAIL FROM:<a@b.test> BY=-5;RT", "501 5.5.4"}}},
		{"by expired notify", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> BY=-5;N", "250 2.1.0"}}},
		{"by and priority", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<a@b.test> BY=60;R MT-PRIORITY=9", "250 2.1.0"}}},
		{"storage error becomes 451", [][2]string{{"EHLO c.test", "250 "}, {"MAIL FROM:<>", "250 "}, {"RCPT TO:<storage@c.test>", "451 4.3.0"}}},
		{"starttls without cert", [][2]string{{"EHLO c.test", "250 "}, {"STARTTLS", "502 5.5.1"}}},
		{"auth disabled", [][2]string{{"EHLO c.test", "250 "}, {"AUTH PLAIN", "502 5.5.1"}}},
		{"control character", [][2]string{{"NOOP a\x00b", "501 5.5.2"}}},
		{"quit", [][2]string{{"QUIT", "221 2.0.0"}}},
	}
	addr := startServer(t, &Server{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			for _, s := range tt.steps {
				c.cmd(s[0], s[1])
			}
		})
	}
}

func TestTooManyRecipients(t *testing.T) {
	addr := startServer(t, &Server{MaxRecipients: 3})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	for i := 0; i < 3; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<u%d@c.test>", i), "250 2.1.5")
	}
	c.cmd("RCPT TO:<u9@c.test>", "452 4.5.3")
}

func TestTooManyErrors(t *testing.T) {
	addr := startServer(t, &Server{MaxErrors: 3})
	c := dial(t, addr)
	c.cmd("FOO", "500 ")
	c.cmd("FOO", "500 ")
	c.send("FOO\r\n")
	c.expect("500 ")
	c.expect("421 4.7.0")
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("connection still open after 421")
	}
}

func TestDataTransaction(t *testing.T) {
	b := &recBackend{}
	addr := startServer(t, &Server{Backend: b})
	c := dial(t, addr)
	c.cmd("EHLO client.test", "250 ")
	c.cmd("MAIL FROM:<\"a b\"@x.test> BODY=8BITMIME", "250 ")
	c.cmd("RCPT TO:<@r1.test,@r2.test:u@d.test> NOTIFY=NEVER", "250 ")
	c.cmd("RCPT TO:<postmaster>", "250 ")
	c.cmd("DATA", "354 ")
	c.send("Subject: hi\r\n\r\n..leading dot\r\n.\r\n")
	c.expect("250 2.0.0 OK: queued as Q1")
	msgs := b.messages()
	if len(msgs) != 1 {
		t.Fatalf("backend got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.from.Local != "a b" || m.params.Body != envelope.Body8BitMIME || m.helo != "client.test" {
		t.Errorf("envelope = %+v", m)
	}
	if got := strings.Join(m.rcpts[0].Route, ","); got != "r1.test,r2.test" || m.rcpts[0].Mailbox() != "u@d.test" {
		t.Errorf("route lost: %+v", m.rcpts[0])
	}
	if m.rparams[0].Notify != envelope.NotifyNever || !m.rcpts[1].IsPostmaster() {
		t.Errorf("rcpt params = %+v, rcpt 2 = %+v", m.rparams[0], m.rcpts[1])
	}
	if want := "Subject: hi\r\n\r\n.leading dot\r\n"; string(m.body) != want {
		t.Errorf("body = %q, want %q", m.body, want)
	}
	// The transaction is over: a new one needs MAIL again.
	c.cmd("RCPT TO:<u@d.test>", "503 5.5.1")
}

func TestDataRefusesBareLineEndings(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"bare LF", "a\nb\r\n.\r\n"},
		{"bare CR", "a\rb\r\n.\r\n"},
		// The smuggling shape: "<LF>.<LF>" must not end the message; the
		// following "MAIL FROM" stays message text, not a command.
		{"smuggled end", "a\r\n\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n"},
		{"dot LF end", "a\r\n.\n\r\n.\r\n"},
		// What we forward must be valid SMTP (RFC 5321 §4.5.3.1.6): no
		// line over 998 octets, no NUL, in the header or the body.
		{"long header line", "Subject: " + strings.Repeat("x", 990) + "\r\n\r\nb\r\n.\r\n"},
		{"long body line", "S: x\r\n\r\n" + strings.Repeat("y", 100000) + "\r\n.\r\n"},
		{"NUL", "S: x\r\n\r\na\x00b\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &recBackend{}
			addr := startServer(t, &Server{Backend: b})
			c := dial(t, addr)
			c.cmd("EHLO c.test", "250 ")
			c.cmd("MAIL FROM:<a@b.test>", "250 ")
			c.cmd("RCPT TO:<u@d.test>", "250 ")
			c.cmd("DATA", "354 ")
			c.send(tc.data)
			c.expect("550 5.6.0")
			c.cmd("NOOP", "250 ")
			if n := len(b.messages()); n != 0 {
				t.Fatalf("backend got %d messages", n)
			}
		})
	}
}

// TestLineLimitExact: a line of exactly 998 octets passes.
func TestLineLimitExact(t *testing.T) {
	b := &recBackend{}
	addr := startServer(t, &Server{Backend: b})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send("S: x\r\n\r\n" + strings.Repeat("y", MaxLineOctets) + "\r\n.\r\n")
	c.expect("250 2.0.0")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send("S: x\r\n\r\n" + strings.Repeat("y", MaxLineOctets+1) + "\r\n.\r\n")
	c.expect("550 5.6.0 Message contains a line longer than 998")
	if n := len(b.messages()); n != 1 {
		t.Fatalf("backend got %d messages", n)
	}
}

func TestDataSizeLimit(t *testing.T) {
	b := &recBackend{}
	addr := startServer(t, &Server{Backend: b, MaxMessageSize: 100})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send(strings.Repeat("0123456789\r\n", 20) + ".\r\n")
	c.expect("552 5.3.4")
	// Exactly at the limit passes.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send(strings.Repeat("01234567\r\n", 10) + ".\r\n")
	c.expect("250 2.0.0")
	if n := len(b.messages()); n != 1 || len(b.messages()[0].body) != 100 {
		t.Fatalf("backend got %d messages", n)
	}
}

func TestBDAT(t *testing.T) {
	b := &recBackend{}
	addr := startServer(t, &Server{Backend: b, MaxMessageSize: 50})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.send("BDAT 5\r\n12345")
	c.expect("503 5.5.1") // chunk consumed even though refused
	c.cmd("NOOP", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.send("BDAT 12\r\nSubject: x\r\n")
	c.expect("250 2.0.0 12 octets")
	c.send("BDAT 7 LAST\r\n\r\n.hi\r\n")
	c.expect("250 2.0.0 OK: queued")
	if m := b.messages(); len(m) != 1 || string(m[0].body) != "Subject: x\r\n\r\n.hi\r\n" {
		t.Fatalf("messages = %+v", m)
	}
	// A line over 998 octets across two chunks, and a NUL, refuse the
	// message at the chunk that shows it.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.send("BDAT 30\r\n" + strings.Repeat("z", 30))
	c.expect("250 ")
	c.send("BDAT 8 LAST\r\na\x00bc\r\n\r\n")
	c.expect("550 5.6.0 Message contains NUL")
	// Bare LF inside a chunk refuses the message.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.send("BDAT 4 LAST\r\na\nb\n")
	c.expect("550 5.6.0")
	// Over the size limit: refused, the chunk still consumed, the
	// transaction over.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.send("BDAT 40\r\n" + strings.Repeat("x", 38) + "\r\n")
	c.expect("250 ")
	c.send("BDAT 20 LAST\r\n" + strings.Repeat("y", 18) + "\r\n")
	c.expect("552 5.3.4")
	c.cmd("DATA", "503 5.5.1")
	// An empty message is legal.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.cmd("BDAT 0 LAST", "250 2.0.0 OK: queued")
	// DATA may not follow BDAT in one transaction.
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@d.test>", "250 ")
	c.send("BDAT 3\r\nabc")
	c.expect("250 ")
	c.cmd("DATA", "503 5.5.1")
	if n := len(b.messages()); n != 2 {
		t.Fatalf("backend got %d messages, want 2", n)
	}
}

// countingConn counts the writes the server makes.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func TestPipeliningOneFlush(t *testing.T) {
	srv := &Server{Hostname: "mx.test", Backend: &recBackend{}, MaxRecipients: 200}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	counted := make(chan *countingConn, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		cc := &countingConn{Conn: nc}
		counted <- cc
		srv.ServeConn(cc)
	}()
	c := dial(t, l.Addr().String())
	cc := <-counted
	c.cmd("EHLO c.test", "250 ")
	var b strings.Builder
	b.WriteString("MAIL FROM:<a@b.test>\r\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "RCPT TO:<u%d@c.test>\r\n", i)
	}
	cc.mu.Lock()
	before := cc.writes
	cc.mu.Unlock()
	c.send(b.String()) // one write: the whole group is in the server's buffer
	c.expect("250 2.1.0")
	for i := 0; i < 100; i++ {
		c.expect("250 2.1.5")
	}
	cc.mu.Lock()
	after := cc.writes
	cc.mu.Unlock()
	if after-before != 1 {
		t.Errorf("101 pipelined replies took %d writes, want 1", after-before)
	}
}

// selfSigned makes a certificate for the tests.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test"},
		DNSNames:     []string{"mx.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestStartTLSAndAuth(t *testing.T) {
	b := &recBackend{}
	srv := &Server{Backend: b, TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, EnableAuth: true}
	addr := startServer(t, srv)

	// Before TLS: AUTH is neither offered nor accepted.
	c := dial(t, addr)
	c.send("EHLO c.test\r\n")
	var ehlo []string
	for {
		line, _ := c.r.ReadString('\n')
		ehlo = append(ehlo, strings.TrimSpace(line))
		if line[3] == ' ' {
			break
		}
	}
	joined := strings.Join(ehlo, "|")
	if !strings.Contains(joined, "STARTTLS") || strings.Contains(joined, "AUTH") {
		t.Errorf("plaintext EHLO = %s", joined)
	}
	// RFC 6710, RFC 2852 in clear; RFC 8689 only inside TLS.
	if !strings.Contains(joined, "|250-MT-PRIORITY|") || !strings.Contains(joined, "|250-DELIVERBY|") || strings.Contains(joined, "REQUIRETLS") {
		t.Errorf("plaintext EHLO = %s", joined)
	}
	c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "538 5.7.11")

	// With go-smtp's client: STARTTLS, then AUTH PLAIN, then a message.
	cl, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Hello("c.test"); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := cl.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Fatalf("AUTH after TLS = %v %q", ok, mechs)
	}
	for _, ext := range []string{"REQUIRETLS", "MT-PRIORITY", "DELIVERBY"} {
		if ok, _ := cl.Extension(ext); !ok {
			t.Errorf("EHLO after STARTTLS lacks %s", ext)
		}
	}
	if err := cl.Auth(saslPlain("alice", "wrong")); err == nil || !strings.Contains(err.Error(), "535") {
		t.Fatalf("wrong password: %v", err)
	}
	if err := cl.Auth(saslPlain("alice", "secret")); err != nil {
		t.Fatal(err)
	}
	if err := cl.SendMail("a@b.test", []string{"u@c.test"}, strings.NewReader("Subject: t\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	m := b.messages()
	if len(m) != 1 || !m[0].tls || m[0].authUser != "alice" {
		t.Fatalf("messages = %+v", m)
	}
	if err := cl.Mail("a@b.test", &smtp.MailOptions{RequireTLS: true}); err != nil {
		t.Fatalf("MAIL REQUIRETLS inside TLS: %v", err)
	}
}

func TestAuthExchanges(t *testing.T) {
	srv := &Server{EnableAuth: true, AllowInsecureAuth: true}
	addr := startServer(t, srv)
	c := dial(t, addr)
	c.cmd("AUTH PLAIN", "503 5.5.1") // before EHLO
	c.cmd("EHLO c.test", "250 ")
	c.cmd("AUTH CRAM-MD5", "504 5.5.4")
	c.cmd("AUTH PLAIN !!!", "501 5.5.2")
	c.cmd("AUTH PLAIN", "334 ")
	c.cmd("*", "501 5.7.0")
	c.cmd("AUTH PLAIN AHRlbXAAeA==", "454 4.7.0") // user "temp"
	c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
	c.cmd("YWxpY2U=", "334 UGFzc3dvcmQ6")
	c.cmd("c2VjcmV0", "235 2.7.0")
	c.cmd("AUTH PLAIN", "503 5.5.1") // already authenticated
	c2 := dial(t, addr)
	c2.cmd("EHLO c.test", "250 ")
	c2.cmd("AUTH LOGIN", "334 ")
	c2.cmd(strings.Repeat("A", maxAuthLineLength+4), "500 5.5.6")
}

func saslPlain(user, pass string) smtpSASL { return smtpSASL{user, pass} }

// smtpSASL is a PLAIN client for go-smtp's Auth.
type smtpSASL struct{ user, pass string }

func (a smtpSASL) Start() (string, []byte, error) {
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}
func (a smtpSASL) Next([]byte) ([]byte, error) { return nil, errors.New("unexpected challenge") }

func TestBackendPanicBecomes421(t *testing.T) {
	addr := startServer(t, &Server{})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<panic@c.test>", "421 4.3.0")
	// The server itself is still up.
	dial(t, addr).cmd("NOOP", "250 ")
}

func TestIdleTimeout(t *testing.T) {
	addr := startServer(t, &Server{CommandTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	c.expect("421 4.4.2")
}

func TestMaxConnections(t *testing.T) {
	addr := startServer(t, &Server{MaxConnections: 2})
	dial(t, addr)
	dial(t, addr)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	c.expect("421 4.7.0")
}

func TestShutdownLetsDataFinish(t *testing.T) {
	b := &recBackend{}
	srv := &Server{Backend: b}
	addr := startServer(t, srv)
	idle := dial(t, addr)
	busy := dial(t, addr)
	busy.cmd("EHLO c.test", "250 ")
	busy.cmd("MAIL FROM:<a@b.test>", "250 ")
	busy.cmd("RCPT TO:<u@c.test>", "250 ")
	busy.cmd("DATA", "354 ")
	busy.send("Subject: half\r\n")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	idle.expect("421 4.3.2")
	busy.send("\r\nbody\r\n.\r\n")
	busy.expect("250 2.0.0")
	busy.cmd("NOOP", "421 4.3.2")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepting after Shutdown")
	}
	if len(b.messages()) != 1 {
		t.Error("message in DATA during shutdown was lost")
	}
}
