package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
)

// submissionRelay runs b.test with a submission service on 127.0.23.6
// (STARTTLS, then implicit TLS), a self-signed certificate and an ed25519
// key for b.test; alice and bob may log in.
func submissionRelay(t *testing.T) (r *Relay, cfg *config.Config, rec string) {
	t.Helper()
	cfg = testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.23.6:0"}
	cfg.Submission.Listen = []string{"127.0.23.6:0"}
	cfg.Submission.ListenTLS = []string{"127.0.23.6:0"}
	var err error
	if cfg.TLS.Cert, cfg.TLS.Key, err = WriteSelfSigned(cfg.DataDir, cfg.Hostname, nil); err != nil {
		t.Fatal(err)
	}
	k, path := newKey(t, cfg.DataDir, dkim.Ed25519)
	cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
	rec = record(t, k)
	cfg.DKIM.Keys = map[string]string{"s1._domainkey.b.test": rec}
	r, _ = launch(t, cfg, Options{}, nil)
	return r, cfg, rec
}

var insecureTLS = &tls.Config{InsecureSkipVerify: true}

// Without AUTH nothing goes through the submission port: 530 5.7.0 at
// MAIL, over STARTTLS and over implicit TLS, from relay_networks too.
func TestSubmissionRequiresAuth(t *testing.T) {
	r, cfg, _ := submissionRelay(t)
	cfg.RelayNetworks = nil // (already) nobody is trusted by address
	addrs := r.SubmissionAddrs()
	if len(addrs) != 2 {
		t.Fatalf("submission addresses %v", addrs)
	}
	starttls, err := smtp.DialStartTLS(addrs[0], insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer starttls.Close()
	implicit, err := smtp.DialTLS(addrs[1], insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer implicit.Close()
	for name, c := range map[string]*smtp.Client{"STARTTLS": starttls, "implicit TLS": implicit} {
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if ok, params := c.Extension("AUTH"); !ok || !strings.Contains(params, "PLAIN") {
			t.Errorf("%s: AUTH not offered (%q)", name, params)
		}
		err := c.Mail("bob@b.test", nil)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 530 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 0}) {
			t.Errorf("%s: MAIL without AUTH = %v, want 530 5.7.0", name, err)
		}
		if err := c.Auth(sasl.NewPlainClient("", "bob", "pw-bob")); err != nil {
			t.Fatalf("%s: AUTH: %v", name, err)
		}
		if err := c.Mail("bob@b.test", nil); err != nil {
			t.Errorf("%s: MAIL after AUTH: %v", name, err)
		}
		if err := c.Rcpt("someone@elsewhere.test", nil); err != nil {
			t.Errorf("%s: an authenticated user may send anywhere: %v", name, err)
		}
		c.Reset()
		// The sender rules of the relay's own port apply.
		err = c.Mail("alice@b.test", nil)
		if !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
			t.Errorf("%s: bob as alice = %v, want 553 5.7.1", name, err)
		}
	}
}

var (
	dateRE  = regexp.MustCompile(`(?m)^Date: (.*)\r$`)
	msgIDRE = regexp.MustCompile(`(?m)^Message-ID: <([^>]*)>\r$`)
)

// A message submitted without Date and Message-ID gets both, and a DKIM
// signature of b.test that covers them; one that has them keeps them.
func TestSubmissionAddsDateMessageIDAndSigns(t *testing.T) {
	r, _, rec := submissionRelay(t)
	o := client.SubmitOptions{Addr: r.SubmissionAddrs()[0], StartTLS: true, TLSConfig: insecureTLS, Username: "bob", Password: "pw-bob"}
	from, _ := envelope.ParseReversePath("<bob@b.test>", false)
	to, _ := envelope.ParseForwardPath("<alice@b.test>", false)
	before := time.Now().Add(-time.Second)
	_, id, err := client.Submit(context.Background(), o, from, []envelope.Path{to},
		[]byte("From: bob@b.test\r\nTo: alice@b.test\r\nSubject: bare\r\n\r\nno date, no id\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, id2, err := client.Submit(context.Background(), o, from, []envelope.Path{to},
		[]byte("From: bob@b.test\r\nTo: alice@b.test\r\nSubject: dressed\r\nDATE: Sat, 21 Nov 2026 09:00:00 +0000\r\nmessage-id: <mine@client.test>\r\n\r\nhas both\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	msgs := mailboxMessages(t, r, "alice", 2)
	bare, dressed := msgs[0], msgs[1]
	if !strings.Contains(bare, "Subject: bare") {
		bare, dressed = dressed, bare
	}
	m := dateRE.FindStringSubmatch(bare)
	if m == nil {
		t.Fatalf("no Date added:\n%s", bare)
	}
	if d, err := time.Parse(time.RFC1123Z, m[1]); err != nil || d.Before(before) || d.After(time.Now().Add(time.Second)) {
		t.Errorf("Date %q: %v", m[1], err)
	}
	if mid := msgIDRE.FindStringSubmatch(bare); mid == nil || !strings.HasPrefix(mid[1], id+".") || !strings.HasSuffix(mid[1], "@b.test") {
		t.Errorf("Message-ID %v, want <%s.…@b.test>:\n%s", mid, id, bare)
	}
	if n := strings.Count(dressed, "\nDate:") + strings.Count(dressed, "\nDATE:"); n != 1 || strings.Count(strings.ToLower(dressed), "\nmessage-id:") != 1 ||
		!strings.Contains(dressed, "message-id: <mine@client.test>") {
		t.Errorf("message %s: fields duplicated or changed:\n%s", id2, dressed)
	}
	for _, msg := range []string{bare, dressed} {
		sig := msg[strings.Index(msg, "DKIM-Signature:"):]
		if h := regexp.MustCompile(`[;\s]h=([^;]*);`).FindStringSubmatch(strings.ReplaceAll(sig, "\r\n ", "")); h == nil ||
			!strings.Contains(h[1], "Date") || !strings.Contains(h[1], "Message-ID") {
			t.Errorf("signature does not cover Date and Message-ID: %v", h)
		}
		res := verifyStored(t, msg[strings.Index(msg, "DKIM-Signature:"):], map[string]string{"s1._domainkey.b.test": rec})
		if len(res) != 1 || res[0].Status != dkim.Pass || res[0].Domain != "b.test" {
			t.Errorf("DKIM: %+v", res)
		}
	}
}

// mailboxMessages waits for n messages in user's mailbox and returns them.
func mailboxMessages(t *testing.T, r *Relay, user string, n int) []string {
	t.Helper()
	var entries []spool.MailboxEntry
	waitUntil(t, "mail in the mailbox", func() bool {
		var err error
		if entries, err = r.Spool().Mailbox(user); err != nil {
			t.Fatal(err)
		}
		return len(entries) >= n
	})
	var out []string
	for _, e := range entries {
		b, err := r.Spool().MailboxMessage(user, e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// swaks, an independent client, submits over both ports; without AUTH
// it is refused with 530 5.7.0.
func TestSubmissionWithSwaks(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks not installed (apt-get install swaks); skipping submission interop test")
	}
	r, _, _ := submissionRelay(t)
	run := func(addr string, args ...string) (string, error) {
		host, port, _ := strings.Cut(addr, ":")
		out, err := exec.Command("swaks", append([]string{"--server", host, "--port", port, "--helo", "swaks.test", "--timeout", "20",
			"--from", "bob@b.test", "--to", "alice@b.test"}, args...)...).CombinedOutput()
		return string(out), err
	}
	sub, subs := r.SubmissionAddrs()[0], r.SubmissionAddrs()[1]
	if out, err := run(sub, "--tls", "--auth", "PLAIN", "--auth-user", "bob", "--auth-password", "pw-bob"); err != nil || !strings.Contains(out, "queued as") {
		t.Errorf("STARTTLS + AUTH: %v\n%s", err, out)
	}
	if out, err := run(subs, "--tlsc", "--auth", "LOGIN", "--auth-user", "bob", "--auth-password", "pw-bob"); err != nil || !strings.Contains(out, "queued as") {
		t.Errorf("implicit TLS + AUTH LOGIN: %v\n%s", err, out)
	}
	if out, err := run(sub, "--tls"); err == nil || !strings.Contains(out, "530 5.7.0 Authentication required") {
		t.Errorf("without AUTH: %v\n%s", err, out)
	}
	msgs := mailboxMessages(t, r, "alice", 2)
	for _, m := range msgs {
		// swaks writes its own Date and Message-Id: kept, not doubled.
		if strings.Count(strings.ToLower(m), "\nmessage-id:") != 1 || strings.Count(m, "\nDate:") != 1 || !strings.Contains(m, "DKIM-Signature:") {
			t.Errorf("stored:\n%s", m)
		}
	}
}

func TestSubmissionConfigRefused(t *testing.T) {
	for name, adjust := range map[string]func(*config.Config){
		"no users":                  func(c *config.Config) { c.UsersFile = "" },
		"listen_tls without a cert": func(c *config.Config) { c.Submission.ListenTLS = []string{"127.0.23.6:0"} },
		"listen without TLS":        func(c *config.Config) {},
	} {
		cfg := testConfig(t)
		cfg.Submission.Listen = []string{"127.0.23.6:0"}
		adjust(cfg)
		if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "[submission]") {
			t.Errorf("%s: New = %v", name, err)
		}
	}
	// On loopback tests, allow_insecure_auth lets a plain port work.
	cfg := testConfig(t)
	cfg.Submission.Listen = []string{"127.0.23.6:0"}
	cfg.AllowInsecureAuth = true
	r, _ := launch(t, cfg, Options{}, nil)
	c, err := smtp.Dial(r.SubmissionAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice", "pw-alice")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@b.test", nil); err != nil {
		t.Fatal(err)
	}
}

func TestHasField(t *testing.T) {
	h := []byte("Subject: x\r\n date: folded\r\nX-Date: no\r\nMessage-Id : <a@b>\r\n\r\n")
	if hasField(h, "Date") || !hasField(h, "message-id") || !hasField(h, "subject") {
		t.Error("hasField wrong")
	}
}
