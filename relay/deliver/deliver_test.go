package deliver

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
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/spool"
)

// ---- a recording backend for our own SMTP server ----

type hello struct {
	name string
	tls  bool
}

type gotMsg struct {
	tls     bool
	from    envelope.Path
	params  envelope.MailParams
	rcpts   []envelope.Path
	rparams []envelope.RcptParams
	body    []byte
}

// recorder records what reaches the policy layer. It refuses the sender
// "blocked" (550), the recipients "nobody" (550) and "later" (451), and a
// body containing "REJECT" (554).
type recorder struct {
	mu     sync.Mutex
	conns  int
	hellos []hello
	msgs   []gotMsg
}

func (b *recorder) NewSession(smtpd.ConnInfo) (smtpd.Session, error) {
	b.mu.Lock()
	b.conns++
	b.mu.Unlock()
	return &recSession{b: b}, nil
}

func (b *recorder) snapshot() (conns int, hellos []hello, msgs []gotMsg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns, append([]hello(nil), b.hellos...), append([]gotMsg(nil), b.msgs...)
}

type recSession struct {
	b   *recorder
	tls bool
	cur gotMsg
}

func (s *recSession) Hello(h smtpd.HelloInfo) error {
	s.tls = h.TLS != nil
	s.b.mu.Lock()
	s.b.hellos = append(s.b.hellos, hello{h.Name, s.tls})
	s.b.mu.Unlock()
	return nil
}

func (s *recSession) Auth(string, string, string) error { return errors.New("no AUTH here") }

func (s *recSession) Mail(from envelope.Path, p envelope.MailParams) error {
	if from.Local == "blocked" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender blocked"}
	}
	s.cur = gotMsg{tls: s.tls, from: from, params: p}
	return nil
}

func (s *recSession) Rcpt(to envelope.Path, p envelope.RcptParams) error {
	switch to.Local {
	case "nobody":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	case "later":
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
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
	if strings.Contains(string(msg), "REJECT") {
		return "", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Content refused"}
	}
	s.cur.body = msg
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.msgs = append(s.b.msgs, s.cur)
	return fmt.Sprintf("Q%d", len(s.b.msgs)), nil
}

func (s *recSession) Reset() { s.cur = gotMsg{} }
func (s *recSession) Close() {}

// tapListener records every byte clients send, so tests can assert the
// commands of plaintext sessions.
type tapListener struct {
	net.Listener
	mu  sync.Mutex
	buf strings.Builder
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, l: l}, nil
}

func (l *tapListener) commands() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type tapConn struct {
	net.Conn
	l *tapListener
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.buf.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

type testServer struct {
	addr string
	port int
	b    *recorder
	tap  *tapListener
}

// startSMTPD runs our smtpd with a recorder on ip (a 127.0.0.x address);
// cert, when not nil, enables STARTTLS.
func startSMTPD(t *testing.T, ip string, cert *tls.Certificate) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port, b: &recorder{}, tap: &tapListener{Listener: l}}
	srv := &smtpd.Server{Hostname: "mx.test", Backend: ts.b}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	go srv.Serve(ts.tap)
	t.Cleanup(func() { srv.Close() })
	return ts
}

// selfSigned makes a certificate for mx.test and 127.0.0.1, and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test"},
		DNSNames:     []string{"mx.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.25.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// ---- a hand-written peer, for behaviour our server never shows ----

// scriptServer answers each command line with answer's reply ("" for no
// reply at all); close ends the connection after the reply. After a 354
// reply, the message lines go unanswered up to the final ".".
func scriptServer(t *testing.T, ip, greeting string, answer func(line string) (reply string, close bool)) (addr string, conns *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				io.WriteString(c, greeting+"\r\n")
				inData := false
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					if inData {
						if line != "." {
							continue // message text is not for answer
						}
						inData = false
					}
					reply, closeAfter := answer(line)
					// The last line counts: a reply may end a pipelined group.
					inData = strings.HasPrefix(reply[strings.LastIndex(reply, "\n")+1:], "354")
					if reply != "" {
						io.WriteString(c, reply+"\r\n")
					}
					if closeAfter {
						return
					}
				}
			})
		}
	})
	return l.Addr().String(), conns
}

// ehloScript answers EHLO with exts and everything else with 250, except
// what special says.
func ehloScript(exts []string, special func(line string) (string, bool, bool)) func(string) (string, bool) {
	return func(line string) (string, bool) {
		if special != nil {
			if r, c, ok := special(line); ok {
				return r, c
			}
		}
		switch cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0]); cmd {
		case "EHLO":
			lines := append([]string{"script.test"}, exts...)
			var b strings.Builder
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				if i > 0 {
					b.WriteString("\r\n")
				}
				b.WriteString("250" + sep + l)
			}
			return b.String(), false
		case "DATA":
			return "354 go ahead", false
		case "QUIT":
			return "221 bye", true
		}
		return "250 ok", false
	}
}

// ---- DNS ----

type fakeResolver struct {
	mx      map[string][]*net.MX
	mxErr   map[string]error
	hosts   map[string][]string
	hostErr map[string]error
}

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if err := r.mxErr[name]; err != nil {
		return nil, err
	}
	if mx, ok := r.mx[name]; ok {
		return mx, nil
	}
	return nil, nxdomain(name)
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if err := r.hostErr[host]; err != nil {
		return nil, err
	}
	if a, ok := r.hosts[host]; ok {
		return a, nil
	}
	return nil, nxdomain(host)
}

// nxdomain is what Go's resolver returns both for a name that does not
// exist and for one without records of the type asked.
func nxdomain(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func servfail(name string) error {
	return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
}

// ---- helpers ----

func testDeliverer(res Resolver, pool *x509.CertPool) *Deliverer {
	return &Deliverer{
		Hostname:       "relay.test",
		Resolver:       res,
		RootCAs:        pool,
		DialTimeout:    2 * time.Second,
		CommandTimeout: 5 * time.Second,
		DataTimeout:    5 * time.Second,
	}
}

func testMessage(id, from, params string) *spool.Message {
	return &spool.Message{ID: id, Envelope: spool.Envelope{From: from, MailParams: params}}
}

const testBody = "Subject: test\r\n\r\n.a line with a leading dot\r\nbody\r\n"

func mustDial(t *testing.T, d *Deliverer, hop queue.Hop) *clientSession {
	t.Helper()
	s, err := d.Dial(context.Background(), hop)
	if err != nil {
		t.Fatalf("Dial(%+v): %v", hop, err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*clientSession)
}

func mustSend(t *testing.T, s queue.Session, msg *spool.Message, rcpts ...string) []queue.Reply {
	t.Helper()
	replies, err := s.Send(context.Background(), msg, rcpts, spool.BytesBody([]byte(testBody)))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(replies) != len(rcpts) {
		t.Fatalf("Send: %d replies for %d recipients", len(replies), len(rcpts))
	}
	return replies
}

func checkReplies(t *testing.T, got []queue.Reply, want ...string) {
	t.Helper()
	for i, w := range want {
		code, _ := strconv.Atoi(w[:3])
		if got[i].Code != code || !strings.HasPrefix(got[i].Text, w) {
			t.Errorf("reply %d = %d %q, want %q...", i, got[i].Code, got[i].Text, w)
		}
	}
}

func permanentCode(err error) int {
	var pe *queue.PermanentError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 0
}

func plainHop(addr string) queue.Hop {
	return queue.Hop{Key: "smtp:" + addr, Addrs: []string{addr}, TLS: "none"}
}

// ---- tests ----

func TestDeliverRecipients(t *testing.T) {
	srv := startSMTPD(t, "127.0.25.1", nil)
	s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))
	if s.Remote() != srv.addr {
		t.Errorf("Remote() = %q, want %q", s.Remote(), srv.addr)
	}
	msg := testMessage("M1", "<s@a.test>", " SIZE=10 BODY=8BITMIME AUTH=<> RET=HDRS ENVID=abc+2Bdef")
	replies := mustSend(t, s, msg,
		"<u1@d.test>",
		"<nobody@d.test>",
		"<later@d.test>",
		"<u2@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bu2@d.test",
		"<@c.test:u3@d.test>",
	)
	checkReplies(t, replies,
		"250 2.0.0 OK: queued as Q1",
		"550 5.1.1 No such user",
		"451 4.3.0 Try again later",
		"250 2.0.0 OK: queued as Q1",
		"250 2.0.0 OK: queued as Q1",
	)

	_, hellos, msgs := srv.b.snapshot()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if want := []hello{{"relay.test", false}}; !reflect.DeepEqual(hellos, want) {
		t.Errorf("hellos = %v, want %v", hellos, want)
	}
	if m.from.String() != "<s@a.test>" {
		t.Errorf("from = %s", m.from)
	}
	// The hand-off field goes first (see handoff.go); SIZE is the real
	// size, AUTH= is not passed on, DSN parameters are.
	wantBody := "X-Relay-Handoff: relay.test M1\r\n" + testBody
	wantParams := envelope.MailParams{Size: int64(len(wantBody)), Body: envelope.Body8BitMIME, Ret: envelope.RetHdrs, EnvID: "abc+def"}
	if m.params != wantParams {
		t.Errorf("MAIL params = %+v, want %+v", m.params, wantParams)
	}
	var got []string
	for _, r := range m.rcpts {
		got = append(got, r.String())
	}
	if want := []string{"<u1@d.test>", "<u2@d.test>", "<@c.test:u3@d.test>"}; !reflect.DeepEqual(got, want) {
		t.Errorf("recipients = %v, want %v", got, want)
	}
	// The source route arrives as a route, not folded into the address.
	if r := m.rcpts[2]; !reflect.DeepEqual(r.Route, []string{"c.test"}) || r.Local != "u3" || r.Domain != "d.test" {
		t.Errorf("source-routed recipient arrived as %+v", r)
	}
	if p := m.rparams[1]; p.Notify != envelope.NotifySuccess|envelope.NotifyFailure ||
		!strings.EqualFold(p.ORcptType, "rfc822") || p.ORcpt != "orig+u2@d.test" {
		t.Errorf("RCPT params of u2 = %+v", p)
	}
	if p := m.rparams[0]; p != (envelope.RcptParams{}) {
		t.Errorf("RCPT params of u1 = %+v, want none", p)
	}
	if string(m.body) != wantBody {
		t.Errorf("body = %q, want %q", m.body, wantBody)
	}
}

func TestDeliverRefusals(t *testing.T) {
	srv := startSMTPD(t, "127.0.25.1", nil)
	s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))

	// A refused sender is every recipient's answer.
	replies := mustSend(t, s, testMessage("M1", "<blocked@a.test>", ""), "<u1@d.test>", "<u2@d.test>")
	checkReplies(t, replies, "550 5.7.1 Sender blocked", "550 5.7.1 Sender blocked")

	// No recipient accepted: no DATA.
	replies = mustSend(t, s, testMessage("M2", "<s@a.test>", ""), "<nobody@d.test>", "<later@d.test>")
	checkReplies(t, replies, "550 5.1.1 No such user", "451 4.3.0 Try again later")

	// A refused DATA is the answer of the accepted recipients only.
	msg := testMessage("M3", "<s@a.test>", "")
	got, err := s.Send(context.Background(), msg, []string{"<u1@d.test>", "<nobody@d.test>"}, spool.BytesBody([]byte("Subject: REJECT\r\n\r\nx\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	checkReplies(t, got, "554 5.6.0 Content refused", "550 5.1.1 No such user")

	// The session survives all of that.
	replies = mustSend(t, s, testMessage("M4", "<>", ""), "<u1@d.test>")
	checkReplies(t, replies, "250 2.0.0 OK: queued as Q1")
	conns, _, msgs := srv.b.snapshot()
	if conns != 1 || len(msgs) != 1 || !msgs[0].from.IsNull() {
		t.Errorf("conns = %d, messages = %+v; want one null-sender message on one connection", conns, msgs)
	}
}

func TestDeliverSessionReuse(t *testing.T) {
	srv := startSMTPD(t, "127.0.25.1", nil)
	s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))
	checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u1@d.test>"), "250 2.0.0 OK: queued as Q1")
	checkReplies(t, mustSend(t, s, testMessage("M2", "<s@a.test>", ""), "<u2@d.test>"), "250 2.0.0 OK: queued as Q2")
	// A transaction with every recipient refused is left open...
	checkReplies(t, mustSend(t, s, testMessage("M3", "<s@a.test>", ""), "<nobody@d.test>"), "550 5.1.1 No such user")
	// ...and the next one starts with RSET.
	checkReplies(t, mustSend(t, s, testMessage("M4", "<s@a.test>", ""), "<u4@d.test>"), "250 2.0.0 OK: queued as Q3")
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	conns, _, msgs := srv.b.snapshot()
	if conns != 1 || len(msgs) != 3 {
		t.Errorf("conns = %d, messages = %d; want 3 messages on 1 connection", conns, len(msgs))
	}
	cmds := srv.tap.commands()
	mails := strings.Split(cmds, "MAIL FROM:")
	if len(mails) != 5 {
		t.Fatalf("want four MAIL commands, got:\n%s", cmds)
	}
	// RFC 5321 §4.1.1.4: the reply to the end of DATA ends a transaction,
	// so no RSET is needed after a delivered message; one is after the
	// aborted third, right before the fourth MAIL.
	if c := strings.Count(cmds, "RSET\r\n"); c != 1 || !strings.HasSuffix(mails[3], "RSET\r\n") {
		t.Errorf("want one RSET, between the aborted transaction and the next, got:\n%s", cmds)
	}
	if !strings.HasSuffix(cmds, "QUIT\r\n") {
		t.Errorf("session did not end with QUIT:\n%s", cmds)
	}
	if strings.Contains(cmds, "localhost") {
		t.Errorf("EHLO localhost sent:\n%s", cmds)
	}
}

// TestDeliverPipelining: to a hop that offers PIPELINING (RFC 2920) the
// commands up to DATA go without waiting for replies. This server answers
// nothing of a transaction before it has read its DATA, so a client that
// waited for the reply to MAIL would time out.
func TestDeliverPipelining(t *testing.T) {
	var group []string
	addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", func(line string) (string, bool) {
		switch cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0]); {
		case cmd == "EHLO":
			return "250-script.test\r\n250-PIPELINING\r\n250 DSN", false
		case cmd == "QUIT":
			return "221 bye", true
		case cmd == "DATA":
			var b strings.Builder
			for _, l := range group {
				switch {
				case strings.HasPrefix(l, "RCPT TO:<nobody@"):
					b.WriteString("550 5.1.1 no such user\r\n")
				default:
					b.WriteString("250 ok\r\n")
				}
			}
			group = nil
			b.WriteString("354 go ahead")
			return b.String(), false
		case line == ".":
			return "250 2.0.0 queued", false
		default:
			group = append(group, line)
			return "", false
		}
	})
	d := testDeliverer(nil, nil)
	d.CommandTimeout = time.Second
	s := mustDial(t, d, plainHop(addr))
	if !s.pipelining {
		t.Fatal("PIPELINING offered but not used")
	}
	for i := range 3 {
		replies := mustSend(t, s, testMessage(fmt.Sprintf("P%d", i), "<s@a.test>", ""), "<a@d.test>", "<nobody@d.test>", "<b@d.test> NOTIFY=NEVER")
		checkReplies(t, replies, "250 2.0.0 queued", "550 5.1.1 no such user", "250 2.0.0 queued")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestDeliverLockStep: to a hop without PIPELINING each command waits for
// its reply, and a refused MAIL ends the transaction before any RCPT.
func TestDeliverLockStep(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript([]string{"8BITMIME"}, func(line string) (string, bool, bool) {
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
		if strings.HasPrefix(line, "MAIL FROM:<blocked@") {
			return "550 5.7.1 not you", false, true
		}
		return "", false, false
	}))
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	if s.pipelining {
		t.Fatal("PIPELINING used but not offered")
	}
	checkReplies(t, mustSend(t, s, testMessage("L1", "<blocked@a.test>", ""), "<a@d.test>", "<b@d.test>"), "550 5.7.1 not you", "550 5.7.1 not you")
	checkReplies(t, mustSend(t, s, testMessage("L2", "<s@a.test>", " BODY=8BITMIME"), "<a@d.test>"), "250 ok")
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	got := strings.Join(lines, "\n")
	want := strings.Join([]string{
		"EHLO relay.test",
		"MAIL FROM:<blocked@a.test>",
		"RSET",
		"MAIL FROM:<s@a.test> BODY=8BITMIME",
		"RCPT TO:<a@d.test>",
		"DATA",
		".",
		"QUIT",
	}, "\n")
	if got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteMessage: dot-stuffing, line ends and the terminating dot.
func TestWriteMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n"},
		{"no end", "no end\r\n.\r\n"},
		{".no end", "..no end\r\n.\r\n"},
		{"bare\nlf\n.x", "bare\r\nlf\r\n..x\r\n.\r\n"},
		{"x\r\n\r\n", "x\r\n\r\n.\r\n"},
	} {
		var b strings.Builder
		w := bufio.NewWriter(&b)
		if err := writeMessage(w, nil, bufio.NewReaderSize(nil, 16), strings.NewReader(tc.in)); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("writeMessage(%q) = %q, want %q", tc.in, b.String(), tc.want)
		}
	}
	// A part of its own in front (the hand-off field) starts the body on
	// a line of its own: the body's leading dot is still doubled.
	var b strings.Builder
	w := bufio.NewWriter(&b)
	if err := writeMessage(w, []byte("X-A: 1\r\n"), bufio.NewReaderSize(nil, 16), strings.NewReader(".b\r\nc")); err != nil {
		t.Fatal(err)
	}
	if want := "X-A: 1\r\n..b\r\nc\r\n.\r\n"; b.String() != want {
		t.Errorf("writeMessage(head, body) = %q, want %q", b.String(), want)
	}
}

func TestDeliverMX(t *testing.T) {
	live := startSMTPD(t, "127.0.25.3", nil)
	res := &fakeResolver{
		// Out of order on purpose: preference decides.
		mx: map[string][]*net.MX{"d.test": {{Host: "mx2.test.", Pref: 20}, {Host: "mx1.test.", Pref: 10}}},
		hosts: map[string][]string{
			"mx1.test": {"127.0.25.2"}, // nothing listens there
			"mx2.test": {"127.0.25.3"},
		},
	}
	s := mustDial(t, testDeliverer(res, nil), queue.Hop{Key: "mx:d.test", MX: "d.test", Port: live.port, TLS: "none"})
	if s.Remote() != live.addr {
		t.Errorf("Remote() = %q, want the second MX %q", s.Remote(), live.addr)
	}
	checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u@d.test>"), "250 ")
}

func TestDeliverImplicitMX(t *testing.T) {
	live := startSMTPD(t, "127.0.25.3", nil)
	for name, res := range map[string]*fakeResolver{
		// Go's resolver answers "no MX records" like NXDOMAIN...
		"not found": {hosts: map[string][]string{"d.test": {"127.0.25.3"}}},
		// ...other resolvers with an empty list.
		"empty": {mx: map[string][]*net.MX{"d.test": nil}, hosts: map[string][]string{"d.test": {"127.0.25.3"}}},
	} {
		t.Run(name, func(t *testing.T) {
			s := mustDial(t, testDeliverer(res, nil), queue.Hop{Key: "mx:d.test", MX: "D.Test.", Port: live.port, TLS: "none"})
			if s.Remote() != live.addr {
				t.Errorf("Remote() = %q, want %q", s.Remote(), live.addr)
			}
		})
	}
}

func TestDeliverDNSFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      *fakeResolver
		wantCode int // 0: deferred
	}{
		{"NXDOMAIN", &fakeResolver{}, 550},
		{"null MX", &fakeResolver{mx: map[string][]*net.MX{"d.test": {{Host: ".", Pref: 0}}}, hosts: map[string][]string{"d.test": {"127.0.25.3"}}}, 556},
		{"SERVFAIL on MX", &fakeResolver{mxErr: map[string]error{"d.test": servfail("d.test")}}, 0},
		{"SERVFAIL on A fallback", &fakeResolver{hostErr: map[string]error{"d.test": servfail("d.test")}}, 0},
		{"MX host without address", &fakeResolver{mx: map[string][]*net.MX{"d.test": {{Host: "mx.test.", Pref: 10}}}}, 0},
		{"we are the best MX", &fakeResolver{
			mx:    map[string][]*net.MX{"d.test": {{Host: "RELAY.test.", Pref: 10}, {Host: "mx.test.", Pref: 20}}},
			hosts: map[string][]string{"mx.test": {"127.0.25.3"}, "relay.test": {"127.0.25.4"}},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := testDeliverer(tc.res, nil).Dial(context.Background(), queue.Hop{Key: "mx:d.test", MX: "d.test", Port: 25, TLS: "none"})
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded")
			}
			if got := permanentCode(err); got != tc.wantCode {
				t.Errorf("Dial: %v; permanent code %d, want %d", err, got, tc.wantCode)
			}
		})
	}
}

func TestDeliverAddressFallback(t *testing.T) {
	live := startSMTPD(t, "127.0.25.1", nil)
	refusing, _ := scriptServer(t, "127.0.25.4", "554 5.7.1 no service for you", ehloScript(nil, nil))
	busy, _ := scriptServer(t, "127.0.25.5", "421 4.3.2 busy", ehloScript(nil, nil))
	dead := "127.0.25.2:" + strconv.Itoa(live.port)
	d := testDeliverer(nil, nil)
	hop := queue.Hop{Key: "test", Addrs: []string{dead, refusing, busy, live.addr}, TLS: "none"}
	s := mustDial(t, d, hop)
	if s.Remote() != live.addr {
		t.Errorf("Remote() = %q, want %q", s.Remote(), live.addr)
	}

	// When every address fails, the last error is returned, deferred.
	hop.Addrs = []string{dead, refusing}
	_, err := d.Dial(context.Background(), hop)
	if err == nil || queue.IsPermanent(err) || !strings.Contains(err.Error(), "554") {
		t.Errorf("Dial = %v; want a deferred error with the last address's 554", err)
	}
}

func TestDeliverOpportunisticTLS(t *testing.T) {
	cert, _ := selfSigned(t)
	t.Run("offered", func(t *testing.T) {
		srv := startSMTPD(t, "127.0.25.1", &cert)
		s := mustDial(t, testDeliverer(nil, nil), queue.Hop{Key: "k", Addrs: []string{srv.addr}, TLS: "opportunistic"})
		if s.tls == nil {
			t.Error("session is not TLS")
		}
		checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u@d.test>"), "250 ")
		checkReplies(t, mustSend(t, s, testMessage("M2", "<s@a.test>", ""), "<u@d.test>"), "250 ")
		conns, hellos, msgs := srv.b.snapshot()
		if conns != 1 || len(msgs) != 2 || !msgs[0].tls || !msgs[1].tls {
			t.Errorf("conns = %d, msgs = %d (tls %v); want 2 TLS messages on 1 connection", conns, len(msgs), msgs)
		}
		// Our name before and after TLS; the one after TLS is what the
		// server's policy sees with the mail.
		if len(hellos) < 2 || hellos[0] != (hello{"relay.test", false}) || hellos[1] != (hello{"relay.test", true}) {
			t.Errorf("hellos = %v", hellos)
		}
		for _, h := range hellos[1:] {
			if h != (hello{"relay.test", true}) {
				t.Errorf("hello after STARTTLS = %v", h)
			}
		}
	})
	t.Run("not offered", func(t *testing.T) {
		srv := startSMTPD(t, "127.0.25.1", nil)
		s := mustDial(t, testDeliverer(nil, nil), queue.Hop{Key: "k", Addrs: []string{srv.addr}, TLS: "opportunistic"})
		checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u@d.test>"), "250 ")
		conns, hellos, msgs := srv.b.snapshot()
		if conns != 1 || len(msgs) != 1 || msgs[0].tls {
			t.Errorf("conns = %d, msgs = %+v; want one plaintext message on 1 connection", conns, msgs)
		}
		if want := []hello{{"relay.test", false}}; !reflect.DeepEqual(hellos, want) {
			t.Errorf("hellos = %v, want %v (one EHLO)", hellos, want)
		}
	})
	t.Run("none ignores STARTTLS", func(t *testing.T) {
		srv := startSMTPD(t, "127.0.25.1", &cert)
		s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))
		checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u@d.test>"), "250 ")
		if _, _, msgs := srv.b.snapshot(); len(msgs) != 1 || msgs[0].tls {
			t.Errorf("msgs = %+v, want one plaintext message", msgs)
		}
	})
}

// A server that offers STARTTLS and then fails it gets no plaintext.
func TestDeliverOpportunisticTLSFailureIsNotFallback(t *testing.T) {
	exts := []string{"8BITMIME", "STARTTLS"}
	for name, starttls := range map[string]string{
		"handshake": "220 2.0.0 go ahead",                                 // then hangs up instead of TLS
		"refused":   "454 4.7.0 TLS not available",                        // offered, then refused
		"injection": "220 2.0.0 go ahead\r\n250 plaintext after STARTTLS", // CVE-2011-0411 class
	} {
		t.Run(name, func(t *testing.T) {
			var mailSeen atomic.Bool
			addr, conns := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript(exts, func(line string) (string, bool, bool) {
				switch {
				case line == "STARTTLS":
					return starttls, name == "handshake", true
				case strings.HasPrefix(line, "MAIL"):
					mailSeen.Store(true)
				}
				return "", false, false
			}))
			_, err := testDeliverer(nil, nil).Dial(context.Background(), queue.Hop{Key: "k", Addrs: []string{addr}, TLS: "opportunistic"})
			if err == nil || queue.IsPermanent(err) {
				t.Fatalf("Dial = %v, want a deferred error", err)
			}
			if conns.Load() != 1 || mailSeen.Load() {
				t.Errorf("connections = %d, MAIL seen = %v; want 1 connection and no MAIL", conns.Load(), mailSeen.Load())
			}
		})
	}
}

func TestDeliverRequireTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	_, otherPool := selfSigned(t)
	t.Run("not offered", func(t *testing.T) {
		srv := startSMTPD(t, "127.0.25.1", nil)
		_, err := testDeliverer(nil, pool).Dial(context.Background(), queue.Hop{Key: "k", Addrs: []string{srv.addr}, TLS: "require"})
		if err == nil || queue.IsPermanent(err) || !strings.Contains(err.Error(), "STARTTLS") {
			t.Errorf("Dial = %v, want a deferred error about STARTTLS", err)
		}
		if _, _, msgs := srv.b.snapshot(); len(msgs) != 0 {
			t.Errorf("messages = %d", len(msgs))
		}
	})

	srv := startSMTPD(t, "127.0.25.1", &cert)
	res := &fakeResolver{
		mx:    map[string][]*net.MX{"d.test": {{Host: "mx.test.", Pref: 10}}, "e.test": {{Host: "other.test.", Pref: 10}}},
		hosts: map[string][]string{"mx.test": {"127.0.25.1"}, "other.test": {"127.0.25.1"}},
	}
	mxHop := func(domain string) queue.Hop {
		return queue.Hop{Key: "mx:" + domain, MX: domain, Port: srv.port, TLS: "require"}
	}
	t.Run("untrusted", func(t *testing.T) {
		_, err := testDeliverer(res, otherPool).Dial(context.Background(), mxHop("d.test"))
		if err == nil || queue.IsPermanent(err) {
			t.Errorf("Dial = %v, want a deferred error", err)
		}
	})
	t.Run("wrong name", func(t *testing.T) {
		// The certificate names mx.test; the MX host is other.test.
		_, err := testDeliverer(res, pool).Dial(context.Background(), mxHop("e.test"))
		if err == nil || queue.IsPermanent(err) {
			t.Errorf("Dial = %v, want a deferred error", err)
		}
	})
	t.Run("trusted, MX name", func(t *testing.T) {
		s := mustDial(t, testDeliverer(res, pool), mxHop("d.test"))
		if s.tls == nil || len(s.tls.VerifiedChains) == 0 {
			t.Errorf("session TLS = %+v, want a verified chain", s.tls)
		}
		checkReplies(t, mustSend(t, s, testMessage("M1", "<s@a.test>", ""), "<u@d.test>"), "250 ")
	})
	t.Run("trusted, route to an IP address", func(t *testing.T) {
		s := mustDial(t, testDeliverer(nil, pool), queue.Hop{Key: "k", Addrs: []string{srv.addr}, TLS: "require"})
		checkReplies(t, mustSend(t, s, testMessage("M2", "<s@a.test>", ""), "<u@d.test>"), "250 ")
	})
	if _, _, msgs := srv.b.snapshot(); len(msgs) != 2 || !msgs[0].tls || !msgs[1].tls {
		t.Errorf("messages = %+v, want 2 over TLS", msgs)
	}
}

func TestDeliver421AfterMail(t *testing.T) {
	addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript([]string{"8BITMIME"}, func(line string) (string, bool, bool) {
		if strings.HasPrefix(line, "MAIL") {
			return "421 4.3.2 shutting down", true, true
		}
		return "", false, false
	}))
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	replies, err := s.Send(context.Background(), testMessage("M1", "<s@a.test>", ""), []string{"<u@d.test>"}, spool.BytesBody([]byte(testBody)))
	if err == nil || queue.IsPermanent(err) {
		t.Fatalf("Send = %v, %v; want a deferred error", replies, err)
	}
	if !strings.Contains(err.Error(), "421") {
		t.Errorf("error %q does not carry the 421", err)
	}
	// The session is spent.
	if _, err := s.Send(context.Background(), testMessage("M2", "<s@a.test>", ""), []string{"<u@d.test>"}, spool.BytesBody([]byte(testBody))); err == nil {
		t.Error("second Send on a broken session succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestDeliverConnectionLostInData(t *testing.T) {
	addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript(nil, func(line string) (string, bool, bool) {
		if line == "." {
			return "", true, true // hang up instead of answering the end of DATA
		}
		return "", false, false
	}))
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	if _, err := s.Send(context.Background(), testMessage("M1", "<s@a.test>", ""), []string{"<u@d.test>"}, spool.BytesBody([]byte(testBody))); err == nil {
		t.Fatal("Send succeeded")
	}
}

func TestDeliverSMTPUTF8(t *testing.T) {
	msg := testMessage("M1", "<sé@a.test>", " SMTPUTF8")
	t.Run("offered", func(t *testing.T) {
		srv := startSMTPD(t, "127.0.25.1", nil)
		s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))
		checkReplies(t, mustSend(t, s, msg, "<ü@d.test>"), "250 ")
		if _, _, msgs := srv.b.snapshot(); len(msgs) != 1 || !msgs[0].params.SMTPUTF8 || msgs[0].rcpts[0].Local != "ü" {
			t.Errorf("messages = %+v", msgs)
		}
	})
	t.Run("not offered", func(t *testing.T) {
		var mailSeen atomic.Bool
		addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript([]string{"8BITMIME"}, func(line string) (string, bool, bool) {
			if strings.HasPrefix(line, "MAIL") {
				mailSeen.Store(true)
			}
			return "", false, false
		}))
		s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
		checkReplies(t, mustSend(t, s, msg, "<ü@d.test>", "<u@d.test>"), "553 5.6.7 ", "553 5.6.7 ")
		if mailSeen.Load() {
			t.Error("MAIL sent to a server without SMTPUTF8")
		}
	})
}

func TestDeliverContextCancel(t *testing.T) {
	addr, _ := scriptServer(t, "127.0.25.1", "220 script.test ESMTP", ehloScript(nil, func(line string) (string, bool, bool) {
		if strings.HasPrefix(line, "MAIL") {
			return "", false, true // never answer
		}
		return "", false, false
	}))
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Send(ctx, testMessage("M1", "<s@a.test>", ""), []string{"<u@d.test>"}, spool.BytesBody([]byte(testBody)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send = %v, want the context's error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send took %v after the context ended", d)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestDeliverBadInput(t *testing.T) {
	d := testDeliverer(nil, nil)
	for _, hop := range []queue.Hop{
		{Key: "local", Local: true, Mailbox: "u"},
		{Key: "empty"},
		{Key: "k", Addrs: []string{"127.0.25.1:25"}, TLS: "sometimes"},
	} {
		if _, err := d.Dial(context.Background(), hop); err == nil {
			t.Errorf("Dial(%+v) succeeded", hop)
		}
	}

	srv := startSMTPD(t, "127.0.25.1", nil)
	s := mustDial(t, d, plainHop(srv.addr))
	for _, tc := range []struct {
		from, params string
		rcpts        []string
	}{
		{"s@a.test", "", []string{"<u@d.test>"}},
		{"<s@a.test>", " FOO=1", []string{"<u@d.test>"}},
		{"<s@a.test>", "", []string{"u@d.test"}},
		{"<s@a.test>", "", []string{"<u@d.test> NOTIFY=SOMETIMES"}},
	} {
		if _, err := s.Send(context.Background(), testMessage("M", tc.from, tc.params), tc.rcpts, spool.BytesBody([]byte(testBody))); err == nil {
			t.Errorf("Send(from %q, params %q, rcpts %q) succeeded", tc.from, tc.params, tc.rcpts)
		}
	}
	// Refused locally before any byte was sent: the session is intact.
	checkReplies(t, mustSend(t, s, testMessage("M", "<s@a.test>", ""), "<u@d.test>"), "250 ")
}

// TestDeliverManyRecipientsPipelined: more recipients than one pipelined
// group holds; every one gets its own answer (our smtpd takes 100 per
// message and answers the rest 452).
func TestDeliverManyRecipientsPipelined(t *testing.T) {
	srv := startSMTPD(t, "127.0.25.1", nil)
	s := mustDial(t, testDeliverer(nil, nil), plainHop(srv.addr))
	rcpts := make([]string, 2*maxPipelined+7)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("<u%d@d.test>", i)
	}
	replies := mustSend(t, s, testMessage("M1", "<s@a.test>", ""), rcpts...)
	var ok, later int
	for i, r := range replies {
		switch r.Code {
		case 250:
			ok++
		case 452:
			later++
		default:
			t.Errorf("recipient %d: %q", i, r.Text)
		}
	}
	_, _, msgs := srv.b.snapshot()
	if len(msgs) != 1 || len(msgs[0].rcpts) != ok || ok < 100 || ok+later != len(rcpts) {
		t.Errorf("%d accepted, %d told to retry; the server got %d messages", ok, later, len(msgs))
	}
	t.Logf("%d recipients: %d accepted, %d answered 452", len(rcpts), ok, later)
}
