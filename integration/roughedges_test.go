package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The rough edges of a first run (issue 22, item 5), each as a user meets
// it. These tests listen on 127.0.24.0/24 only.

// TestSelfSignedImplicitTLS: relay serve --self-signed makes a certificate
// for every listen address, so a client that checks it (--ca) reaches the
// relay by the address it listens on: relay send --tls and relay read
// --tls on the listen_tls ports.
func TestSelfSignedImplicitTLS(t *testing.T) {
	dir := t.TempDir()
	smtps, pop3s := freeAddr(t, "127.0.24.60"), freeAddr(t, "127.0.24.60")
	cfg := writeFile(t, dir, "tls.toml", []byte(fmt.Sprintf(`hostname = "b.test"
data_dir = "data"
local_domains = ["b.test"]
[smtp]
listen = [%q]
listen_tls = [%q]
[pop3]
listen = []
listen_tls = [%q]
[admin]
socket = ""
`, freeAddr(t, "127.0.24.60"), smtps, pop3s)))
	pw := writeFile(t, dir, "pw", []byte("secret\n"))
	mustRun(t, nil, "user", "add", "bob", "--password-file", pw, "--config", cfg)
	p := startProc(t, cfg, smtps, "--self-signed")
	defer p.stop()
	ca := filepath.Join(dir, "data", "tls", "self-signed.crt")

	mustRun(t, []byte("over implicit TLS\n"), "send", "--server", smtps, "--tls", "--ca", ca,
		"--from", "me@a.test", "--to", "bob@b.test", "--subject", "smtps")
	var out string
	waitFor(t, 10*time.Second, "bob's message over POP3S", func() bool {
		o, _, code := run(t, nil, nil, "read", "--server", pop3s, "--tls", "--ca", ca, "--user", "bob", "--password-file", pw, "--show", "1")
		out = o
		return code == 0
	})
	if !strings.Contains(out, "Subject: smtps\n") || !strings.Contains(out, "over implicit TLS") {
		t.Errorf("read --tls --show 1:\n%s", out)
	}
	_, errOut, code := run(t, nil, nil, "send", "--server", smtps, "--tls", "--starttls", "--from", "me@a.test", "--to", "bob@b.test")
	if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "do not go together") {
		t.Errorf("send --tls --starttls: exit %d, %q", code, errOut)
	}
}

// rawSend submits body to addr after `EHLO helo` and `MAIL FROM:from`
// (a path and parameters), speaking SMTP by hand (go-smtp's client would refuse the
// odd inputs this is for), and returns the reply to the end of DATA.
func rawSend(t *testing.T, addr, helo, from, to, body string) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	reply := func() string {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("SMTP: %v", err)
			}
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimSpace(l)
			}
		}
	}
	reply()
	for _, cmd := range []string{"EHLO " + helo, "MAIL FROM:" + from, "RCPT TO:<" + to + ">", "DATA"} {
		fmt.Fprintf(nc, "%s\r\n", cmd)
		if r := reply(); r[0] != '2' && r[0] != '3' {
			return r
		}
	}
	fmt.Fprintf(nc, "%s.\r\n", body)
	return reply()
}

// TestPoplibRetrievesEverything: Python's poplib, an independent POP3
// client that refuses lines over 2048 octets, RETRs every kind of message
// our POP3 serves (a line of 998 octets, the longest acceptance allows;
// the longest EHLO name and long DKIM tags, which end up in header fields
// the relay writes; a DSN returning such a message), each byte for byte,
// and no line of what it gets is over 998 octets (RFC 5322 §2.1.1). A
// line of 999 is refused at acceptance (550 5.6.0), and so is an EHLO
// name over 255 octets (501 5.5.2), so no client ever meets either.
func TestPoplibRetrievesEverything(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("Debian's /usr/bin/python3 is not installed: poplib is the peer of this test")
	}
	b := newNode(t, "b", "127.0.24.70").withPOP3().withAdmin()
	b.route("c.test", "127.0.24.71:9") // nothing listens there: deferred
	b.start()

	line998 := strings.Repeat("x", 998)
	longDomain := strings.TrimSuffix(strings.Repeat(strings.Repeat("d", 60)+".", 15), ".") + ".test" // 920 octets
	longSel := strings.Repeat("s", 900)
	sent := []struct{ helo, from, to, body string }{
		{"client.test", "<a@a.test>", "alice@b.test", "Subject: a line of 998\r\n\r\n" + line998 + "\r\nend\r\n"},
		{strings.Repeat("h", 250) + ".test", "<a@a.test>", "alice@b.test", "Subject: the longest EHLO name\r\n\r\nbody\r\n"},
		{"client.test", "<a@a.test>", "alice@b.test", "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n d=" + longDomain + ";\r\n s=" + longSel + ";\r\n h=From:Subject; bh=AAAA; b=AAAA\r\nFrom: x@" + longDomain + "\r\nSubject: long DKIM tags\r\n\r\nbody\r\n"},
	}
	for _, m := range sent {
		if r := rawSend(t, b.addr, m.helo, m.from, m.to, m.body); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("%q: %s", m.body[:30], r)
		}
	}
	// A longer EHLO name would make a Received line too long: refused.
	if r := rawSend(t, b.addr, strings.Repeat("h", 1500)+".test", "<a@a.test>", "alice@b.test", "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(r, "501 5.5.2") {
		t.Fatalf("EHLO with a name of 1505 octets: %s, want 501 5.5.2", r)
	}
	if r := rawSend(t, b.addr, "client.test", "<a@a.test>", "alice@b.test", "Subject: 999\r\n\r\n"+line998+"x\r\n"); !strings.HasPrefix(r, "550 5.6.0") {
		t.Fatalf("a line of 999 octets: %s, want 550 5.6.0", r)
	}
	// A DSN to alice that returns a message with a line of 998.
	id := rawSend(t, b.addr, "client.test", "<alice@b.test> RET=FULL", "carol@c.test", "Subject: returned\r\n\r\n"+line998+"\r\n")
	if !strings.HasPrefix(id, "250 ") {
		t.Fatal(id)
	}
	id = id[strings.LastIndex(id, " ")+1:]
	waitFor(t, 10*time.Second, "carol's delivery deferred", func() bool {
		q := b.queued()
		return len(q) == 1 && q[0].Recipients[0].Attempts > 0
	})
	b.queue("bounce", id)
	waitFor(t, 10*time.Second, "alice's four messages", func() bool { return len(b.mailbox("alice")) == 4 })

	script := `
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=10)
p.user("alice"); p.pass_("pw")
for n, size in [l.split() for l in p.list()[1]]:
    resp, lines, octets = p.retr(int(n))
    longest = max(len(l) for l in lines)
    # poplib undoes dot-stuffing; octets counts the lines as sent, CRLF each.
    print(n.decode(), int(size), sum(len(l) + 2 for l in lines), longest)
p.quit()
`
	host, port, _ := net.SplitHostPort(b.pop3Addr())
	out, err := exec.Command(python, "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	t.Logf("message, LIST size, RETR octets, longest line:\n%s", out)
	rows := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(rows) != 4 {
		t.Fatalf("poplib retrieved %d messages, want 4:\n%s", len(rows), out)
	}
	for _, row := range rows {
		var n, size, got, longest int
		if _, err := fmt.Sscan(row, &n, &size, &got, &longest); err != nil {
			t.Fatalf("%q: %v", row, err)
		}
		if got != size {
			t.Errorf("message %d: LIST says %d octets, RETR gave %d", n, size, got)
		}
		if longest > 998 {
			t.Errorf("message %d has a line of %d octets; RFC 5322 allows 998", n, longest)
		}
	}
}

// TestQueueListNoMatch: a filter that selects nothing says so, not that
// the queue is empty while it holds mail.
func TestQueueListNoMatch(t *testing.T) {
	a := newNode(t, "a", "127.0.24.72").withAdmin()
	a.route("c.test", "127.0.24.73:9") // nothing listens there: deferred
	a.start()
	if _, err := sendOne(a.addr, "bob@a.test", "carol@c.test", "Subject: waiting\r\n\r\nbody\r\n"); err != nil {
		t.Fatal(err)
	}
	if out := a.queue("list", "--to", "nobody"); out != "no queued message matches\n" {
		t.Errorf("list --to nobody: %q", out)
	}
	if out := a.queue("list", "--to", "carol"); !strings.Contains(out, "carol@c.test") {
		t.Errorf("list --to carol:\n%s", out)
	}
	if out := a.queue("list", "--from", "x", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("list --from x --json: %q", out)
	}
}

// TestQueueShape: relay queue shape against a running daemon, as a table
// and as JSON: fresh deferred mail for two domains, the busier first.
func TestQueueShape(t *testing.T) {
	a := newNode(t, "a", "127.0.24.74").withAdmin()
	a.route("*", "127.0.24.75:9") // nothing listens there: deferred
	a.start()
	for _, to := range []string{"u1@c.test", "u2@c.test", "u@d.test"} {
		if _, err := sendOne(a.addr, "bob@a.test", to, "Subject: waiting\r\n\r\nbody\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	out := a.queue("shape")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "DOMAIN ") || !strings.Contains(lines[0], "320m+") ||
		strings.Fields(lines[1])[1] != "3" || strings.Fields(lines[2])[0] != "c.test" || strings.Fields(lines[2])[2] != "2" ||
		strings.Fields(lines[3])[0] != "d.test" {
		t.Errorf("queue shape:\n%s", out)
	}
	sh := a.queueJSON("shape", "--by", "hop").(map[string]any)
	rows := sh["rows"].([]any)
	if sh["by"] != "hop" || len(rows) != 1 || rows[0].(map[string]any)["total"] != 3.0 ||
		!strings.Contains(rows[0].(map[string]any)["destination"].(string), "127.0.24.75:9") {
		t.Errorf("queue shape --by hop --json: %v", sh)
	}
	_, errOut, code := run(t, nil, nil, "queue", "shape", "--by", "sender", "--admin", a.cfg.Admin.Socket)
	if code == 0 || !strings.Contains(errOut, `--by "sender": want domain or hop`) {
		t.Errorf("shape --by sender: exit %d, %q", code, errOut)
	}
}
