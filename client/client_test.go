package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/pop3d"
)

func randomData(n int) []byte {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestComposeAndParseRoundTrip(t *testing.T) {
	bin := randomData(100_000)
	subject := "Grüße aus Köln ☃ — a subject long enough that its encoded form must be folded over lines"
	text := "Hällo,\n.a line that starts with a dot\n" + strings.Repeat("long ", 300) + "\nbye\n"
	m := &Message{
		From:    "Ann Example <ann@a.test>",
		To:      []string{"bob@b.test", "Čeněk <cenek@b.test>"},
		Subject: subject,
		Date:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Headers: []Header{{"X-Tag", "one"}},
		Text:    text,
		Attachments: []Attachment{
			{Filename: "/some/dir/data.bin", Data: bin},
			{Filename: "notes.txt", Data: []byte("plain\r\nnotes\r\n")},
		},
	}
	raw, from, to, err := Compose(m)
	if err != nil {
		t.Fatal(err)
	}
	if from.Address != "ann@a.test" || len(to) != 2 || to[1].Address != "cenek@b.test" {
		t.Errorf("envelope addresses: %v %v", from, to)
	}
	// Safe for any relay: 7-bit, CRLF only, no line over 998 octets.
	for i, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) > 998 || bytes.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d is too long or has a bare CR/LF: %q", i, line)
		}
		for _, c := range line {
			if c >= 0x80 {
				t.Fatalf("line %d is not ASCII: %q", i, line)
			}
		}
	}
	for _, want := range []string{"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n", "\r\nMessage-ID: <", "@a.test>\r\n",
		"From: \"Ann Example\" <ann@a.test>\r\n", "Subject: =?utf-8?q?", "\r\nX-Tag: one\r\n", "MIME-Version: 1.0\r\n",
		"Content-Type: multipart/mixed;", `Content-Disposition: attachment; filename=data.bin`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("message lacks %q:\n%s", want, raw[:min(len(raw), 2000)])
		}
	}
	p, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != subject {
		t.Errorf("Subject = %q, want %q", p.Subject, subject)
	}
	if p.To != "bob@b.test, Čeněk <cenek@b.test>" && !strings.Contains(p.To, "Čeněk") {
		t.Errorf("To = %q", p.To)
	}
	if want := strings.ReplaceAll(text, "\n", "\r\n"); p.Text != want {
		t.Errorf("Text = %q, want %q", p.Text, want)
	}
	if !p.Date.Equal(m.Date) {
		t.Errorf("Date = %v", p.Date)
	}
	if len(p.Attachments) != 2 {
		t.Fatalf("attachments: %d", len(p.Attachments))
	}
	if a := p.Attachments[0]; a.Filename != "data.bin" || a.ContentType != "application/octet-stream" || !bytes.Equal(a.Data, bin) {
		t.Errorf("binary attachment %q %q: %d bytes, equal %v", a.Filename, a.ContentType, len(a.Data), bytes.Equal(a.Data, bin))
	}
	if a := p.Attachments[1]; a.Filename != "notes.txt" || !strings.HasPrefix(a.ContentType, "text/plain") || string(a.Data) != "plain\r\nnotes\r\n" {
		t.Errorf("text attachment %+v", a)
	}
}

func TestComposePlainASCII(t *testing.T) {
	raw, _, _, err := Compose(&Message{From: "a@a.test", To: []string{"b@b.test"}, Subject: "hi", Text: "hello\n"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	if !strings.Contains(s, "Subject: hi\r\n") || !strings.Contains(s, "Content-Transfer-Encoding: 7bit\r\n\r\nhello\r\n") {
		t.Errorf("plain message:\n%s", s)
	}
}

func TestComposeRefuses(t *testing.T) {
	base := Message{From: "a@a.test", To: []string{"b@b.test"}}
	for name, mod := range map[string]func(m *Message){
		"no recipient":      func(m *Message) { m.To = nil },
		"bad from":          func(m *Message) { m.From = "not an address" },
		"bad to":            func(m *Message) { m.To = []string{"b@"} },
		"duplicate Subject": func(m *Message) { m.Headers = []Header{{"subject", "x"}} },
		"header injection":  func(m *Message) { m.Headers = []Header{{"X-A", "v\r\nBcc: x@y"}} },
		"bad header name":   func(m *Message) { m.Headers = []Header{{"X A", "v"}} },
	} {
		m := base
		mod(&m)
		if _, _, _, err := Compose(&m); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ParseHeader("no colon"); err == nil {
		t.Error("ParseHeader accepted a line without ':'")
	}
	if h, err := ParseHeader("X-Prio:  high "); err != nil || h != (Header{"X-Prio", "high"}) {
		t.Errorf("ParseHeader = %+v, %v", h, err)
	}
}

// fakeSMTP is a scripted SMTP server that records the commands it gets.
type fakeSMTP struct {
	mu    sync.Mutex
	lines []string
	data  []byte
}

func (f *fakeSMTP) serve(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.62:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go f.session(nc)
		}
	}()
	return l.Addr().String()
}

func (f *fakeSMTP) session(nc net.Conn) {
	defer nc.Close()
	r := bufio.NewReader(nc)
	say := func(s string) { nc.Write([]byte(s + "\r\n")) }
	say("220 fake ESMTP")
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		f.mu.Lock()
		f.lines = append(f.lines, l)
		f.mu.Unlock()
		switch verb := strings.ToUpper(strings.SplitN(l, " ", 2)[0]); {
		case verb == "EHLO":
			say("250-fake\r\n250-8BITMIME\r\n250 AUTH PLAIN")
		case verb == "AUTH":
			if l == "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00ann\x00pw")) {
				say("235 2.7.0 ok")
			} else {
				say("535 5.7.8 Authentication credentials invalid")
			}
		case verb == "RCPT" && strings.Contains(l, "nobody@"):
			say("550 5.1.1 No such user here")
		case verb == "DATA":
			say("354 go on")
			var b bytes.Buffer
			for {
				dl, err := r.ReadString('\n')
				if err != nil || dl == ".\r\n" {
					break
				}
				b.WriteString(dl)
			}
			f.mu.Lock()
			f.data = b.Bytes()
			f.mu.Unlock()
			say("250 2.0.0 OK: queued as 001ABCDEF0123")
		case verb == "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func mustPath(t *testing.T, s string) envelope.Path {
	p, err := envelope.ParseForwardPath(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSubmit(t *testing.T) {
	f := &fakeSMTP{}
	addr := f.serve(t)
	from, _ := envelope.ParseReversePath("<ann@a.test>", false)
	rcpts := []envelope.Path{mustPath(t, "<bob@b.test>"), mustPath(t, "<@h1.test,@h2.test:carol@c.test>")}
	ctx := context.Background()
	reply, id, err := Submit(ctx, SubmitOptions{Addr: addr, Username: "ann", Password: "pw"}, from, rcpts, []byte("Subject: x\r\n\r\n.dot\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if id != "001ABCDEF0123" || !strings.Contains(reply, "queued as") {
		t.Errorf("reply %q, id %q", reply, id)
	}
	f.mu.Lock()
	got := strings.Join(f.lines, "\n")
	data := string(f.data)
	f.mu.Unlock()
	for _, want := range []string{"MAIL FROM:<ann@a.test>", "RCPT TO:<bob@b.test>", "RCPT TO:<@h1.test,@h2.test:carol@c.test>"} {
		if !strings.Contains(got, want) {
			t.Errorf("server did not get %q:\n%s", want, got)
		}
	}
	if data != "Subject: x\r\n\r\n..dot\r\n" {
		t.Errorf("DATA = %q (dot-stuffed on the wire)", data)
	}

	// A refused recipient is named, with the server's reply.
	_, _, err = Submit(ctx, SubmitOptions{Addr: addr}, from, []envelope.Path{mustPath(t, "<bob@b.test>"), mustPath(t, "<nobody@b.test>")}, []byte("x\r\n"))
	var re *RecipientError
	if !errors.As(err, &re) || re.Rcpt != "<nobody@b.test>" || err.Error() != "recipient <nobody@b.test> refused: 550 5.1.1 No such user here" {
		t.Errorf("refused recipient: %v", err)
	}
	_, _, err = Submit(ctx, SubmitOptions{Addr: addr, Username: "ann", Password: "wrong"}, from, rcpts, []byte("x\r\n"))
	if err == nil || err.Error() != "AUTH refused: 535 5.7.8 Authentication credentials invalid" {
		t.Errorf("bad password: %v", err)
	}
	// REQUIRETLS without TLS: refused here, before MAIL.
	f.mu.Lock()
	mails := strings.Count(strings.Join(f.lines, "\n"), "MAIL FROM")
	f.mu.Unlock()
	_, _, err = Submit(ctx, SubmitOptions{Addr: addr, RequireTLS: true}, from, rcpts, []byte("x\r\n"))
	if err == nil || !strings.Contains(err.Error(), "REQUIRETLS needs a TLS session") {
		t.Errorf("REQUIRETLS in plaintext: %v", err)
	}
	f.mu.Lock()
	if n := strings.Count(strings.Join(f.lines, "\n"), "MAIL FROM"); n != mails {
		t.Errorf("REQUIRETLS in plaintext still sent MAIL FROM")
	}
	f.mu.Unlock()
	// Nothing listens on port 1 of this address.
	_, _, err = Submit(ctx, SubmitOptions{Addr: "127.0.0.62:1", Timeout: 2 * time.Second}, from, rcpts, []byte("x\r\n"))
	if err == nil || !strings.Contains(err.Error(), "connect to 127.0.0.62:1") {
		t.Errorf("unreachable server: %v", err)
	}
}

// memDrop is a one-user maildrop for the POP3 client test.
type memDrop struct {
	msgs    [][]byte
	deleted *[]int
}

func (d *memDrop) Messages() ([]pop3d.MessageInfo, error) {
	var out []pop3d.MessageInfo
	for i, m := range d.msgs {
		out = append(out, pop3d.MessageInfo{UID: "u" + string(rune('a'+i)), Size: int64(len(m))})
	}
	return out, nil
}
func (d *memDrop) Message(i int) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(d.msgs[i])), nil
}
func (d *memDrop) Delete(idx []int) error { *d.deleted = idx; return nil }
func (d *memDrop) Close()                 {}

type memBackend struct{ drop *memDrop }

func (b memBackend) Login(_ pop3d.ConnInfo, user, pass string) (pop3d.Maildrop, error) {
	if user != "ann" || pass != "pw pw" {
		return nil, pop3d.ErrAuthFailed
	}
	return b.drop, nil
}

func TestPOP3Client(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 10000)
	msgs := [][]byte{
		[]byte("Subject: one\r\n\r\n.leading dot\r\n.\r\nend\r\n"),
		append(append([]byte("Subject: two\r\n\r\n."), long...), "\r\n"...),
	}
	var deleted []int
	srv := &pop3d.Server{Hostname: "pop.test", Backend: memBackend{&memDrop{msgs: msgs, deleted: &deleted}}, AllowInsecureAuth: true, AuthFailureDelay: time.Millisecond}
	l, err := net.Listen("tcp", "127.0.0.62:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	ctx := context.Background()

	c, err := DialPOP3(ctx, POP3Options{Addr: l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Login("ann", "wrong")
	var pe *POP3Error
	if !errors.As(err, &pe) || pe.Code != "AUTH" || pe.Command != "PASS" || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password: %v", err)
	}
	if err := c.Login("ann", "pw pw"); err != nil {
		t.Fatal(err)
	}
	if n, size, err := c.Stat(); err != nil || n != 2 || size != int64(len(msgs[0])+len(msgs[1])) {
		t.Errorf("Stat = %d %d %v", n, size, err)
	}
	list, err := c.List()
	if err != nil || len(list) != 2 || list[1] != (MessageInfo{Number: 2, Size: int64(len(msgs[1])), UID: "ub"}) {
		t.Errorf("List = %+v, %v", list, err)
	}
	for i, m := range msgs {
		got, err := c.Retr(i + 1)
		if err != nil || !bytes.Equal(got, m) {
			t.Errorf("Retr(%d) = %q, %v", i+1, got, err)
		}
	}
	if top, err := c.Top(1, 0); err != nil || string(top) != "Subject: one\r\n\r\n" {
		t.Errorf("Top = %q, %v", top, err)
	}
	if err := c.Dele(2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retr(2); err == nil {
		t.Error("Retr of a deleted message succeeded")
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != 1 {
		t.Errorf("deleted at QUIT: %v", deleted)
	}
}
