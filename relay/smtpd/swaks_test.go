package smtpd

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// swaks runs the swaks SMTP client (Debian package "swaks") against addr.
func swaks(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("swaks", append([]string{"--server", host, "--port", port, "--helo", "swaks.test", "--timeout", "30"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestSwaksInterop drives the server with swaks, an independent client that
// speaks every extension, and checks what the backend received.
func TestSwaksInterop(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks not installed (apt-get install swaks); skipping interop test")
	}
	b := &recBackend{}
	srv := &Server{Backend: b, EnableAuth: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}}
	addr := startServer(t, srv)

	t.Run("pipelining", func(t *testing.T) {
		out := swaks(t, addr, "--from", "a@src.test", "--to", "u1@c.test,u2@c.test,u3@c.test",
			"--pipeline", "--body", "caf\xc3\xa9\r\n")
		if !strings.Contains(out, "queued as") || !strings.Contains(out, "PIPELINING") {
			t.Fatalf("no pipelined 250 queued:\n%s", out)
		}
	})
	t.Run("utf8 sender without SMTPUTF8", func(t *testing.T) {
		// swaks (2020) cannot send the SMTPUTF8 parameter; without it a
		// UTF-8 address must be refused. Python's smtplib covers the
		// positive case below.
		host, port, _ := strings.Cut(addr, ":")
		out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "jörg@src.test", "--to", "u@c.test").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "553 5.6.7") {
			t.Fatalf("want 553 5.6.7, got err=%v:\n%s", err, out)
		}
	})
	t.Run("starttls auth plain", func(t *testing.T) {
		out := swaks(t, addr, "--from", "a@src.test", "--to", "u@c.test", "--tls",
			"--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret")
		if !strings.Contains(out, "235 2.7.0") {
			t.Fatalf("no 235:\n%s", out)
		}
	})
	t.Run("10 MiB body", func(t *testing.T) {
		body := filepath.Join(t.TempDir(), "body")
		line := strings.Repeat("0123456789abcdef", 4) + "\r\n" // 66 bytes
		big := strings.Repeat(line, 10<<20/len(line)+1)
		if err := os.WriteFile(body, []byte(big), 0o600); err != nil {
			t.Fatal(err)
		}
		swaks(t, addr, "--from", "a@src.test", "--to", "big@c.test", "--pipeline", "--body", body)
	})
	t.Run("source route", func(t *testing.T) {
		// swaks splits --to at every comma, so it can only send a
		// one-hop route; TestPythonSMTPUTF8 sends a two-hop one.
		out := swaks(t, addr, "--from", "a@src.test", "--to", "@b.test:routed@c.test")
		if !strings.Contains(out, "RCPT TO:<@b.test:routed@c.test>") {
			t.Fatalf("swaks did not send the route:\n%s", out)
		}
	})

	msgs := b.messages()
	find := func(local string) *recMsg {
		for i := range msgs {
			for _, r := range msgs[i].rcpts {
				if r.Local == local {
					return &msgs[i]
				}
			}
		}
		t.Fatalf("no message for %q among %d", local, len(msgs))
		return nil
	}
	if m := find("u1"); len(m.rcpts) != 3 || !strings.Contains(string(m.body), "caf\xc3\xa9") {
		t.Errorf("pipelined message: %d rcpts, body %q", len(m.rcpts), m.body)
	}
	if m := find("routed"); len(m.rcpts[0].Route) != 1 || m.rcpts[0].Route[0] != "b.test" || m.rcpts[0].Domain != "c.test" {
		t.Errorf("source route not seen by the backend: %+v", m.rcpts[0])
	}
	for _, m := range msgs {
		if m.authUser == "alice" && !m.tls {
			t.Error("authenticated message not over TLS")
		}
	}
	if m := find("big"); len(m.body) < 10<<20 {
		t.Errorf("big body %d bytes, want ≥ 10 MiB", len(m.body))
	}
}

// TestPythonSMTPUTF8 uses Python's smtplib, an independent client, for
// SMTPUTF8, BODY=8BITMIME and a two-hop source route, which swaks cannot
// send.
func TestPythonSMTPUTF8(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed; skipping smtplib interop test")
	}
	b := &recBackend{}
	addr := startServer(t, &Server{Backend: b})
	host, port, _ := strings.Cut(addr, ":")
	script := `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.ehlo("py.test")
assert s.has_extn("smtputf8") and s.has_extn("8bitmime") and s.has_extn("pipelining")
refused = s.sendmail("jörg@src.test", ["łukasz@ü.test"], "Subject: ü\r\n\r\ncafé\r\n".encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
assert not refused, refused
s.mail("<a@src.test>")
code, _ = s.docmd("RCPT TO:<@a.test,@b.test:u@c.test>")
assert code == 250, code
code, _ = s.data(b"Subject: routed\r\n\r\nx\r\n")
assert code == 250, code
s.quit()
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	m := b.messages()
	if len(m) != 2 || strings.Join(m[1].rcpts[0].Route, ",") != "a.test,b.test" || m[1].rcpts[0].Mailbox() != "u@c.test" {
		t.Fatalf("routed message = %+v", m)
	}
	if !m[0].params.SMTPUTF8 || m[0].params.Body != "8BITMIME" || m[0].from.Local != "jörg" ||
		m[0].rcpts[0].Domain != "ü.test" || !strings.Contains(string(m[0].body), "café") {
		t.Fatalf("messages = %+v", m)
	}
}
