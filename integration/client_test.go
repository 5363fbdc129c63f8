package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/envelope"
)

// withPOP3 makes n listen for POP3 on its own address, without TLS:
// its clients are on loopback, where logins need no TLS.
func (n *node) withPOP3() *node {
	ip, _, _ := strings.Cut(n.addr, ":")
	n.cfg.POP3.Listen = []string{freeAddr(n.t, ip)}
	return n
}

func (n *node) pop3Addr() string { return n.cfg.POP3.Listen[0] }

// run runs the relay binary and returns its stdout, stderr and exit code.
func run(t *testing.T, stdin []byte, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relayBinary(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("relay %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, stdin, nil, args...)
	if code != 0 {
		t.Fatalf("relay %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSendReadAcrossRelays is the user's path: `relay send` to relay A,
// which forwards to relay B, and `relay read` at B (and fetchmail) shows
// the message with its UTF-8 subject, its text and a binary attachment
// that comes back byte for byte.
func TestSendReadAcrossRelays(t *testing.T) {
	b := newNode(t, "b", "127.0.0.62").withPOP3().start()
	a := newNode(t, "a", "127.0.0.61")
	a.route("b.test", b.addr)
	a.start()

	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", []byte("pw\n"))
	attachment := make([]byte, 200_000)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range attachment {
		attachment[i] = byte(rng.Uint32())
	}
	attPath := writeFile(t, dir, "photo.bin", attachment)
	subject := "Grüße aus Köln — ☃ résumé"
	text := "Hello Alice,\n.this line starts with a dot\nÜnïcödé body.\n"

	out := mustRun(t, []byte(text), "send", "--server", a.addr, "--from", "Sender <sender@a.test>", "--to", "alice@b.test",
		"--subject", subject, "--attach", attPath, "--header", "X-Test: yes")
	id := strings.TrimSpace(out)
	if len(id) != 13 {
		t.Fatalf("send printed %q, want the 13-character queue ID", out)
	}
	waitFor(t, 10*time.Second, "delivery into b's mailbox", func() bool { return len(b.mailbox("alice")) == 1 })

	login := []string{"--server", b.pop3Addr(), "--user", "alice", "--password-file", pw}
	var list []struct {
		Number  int
		UID     string
		Size    int64
		From    string
		Subject string
		Date    time.Time
	}
	if err := json.Unmarshal([]byte(mustRun(t, nil, append([]string{"read", "--json"}, login...)...)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Subject != subject || list[0].From != "Sender <sender@a.test>" || list[0].Number != 1 ||
		time.Since(list[0].Date) > time.Minute || list[0].Size < int64(len(attachment)) {
		t.Fatalf("listing: %+v", list)
	}
	table := mustRun(t, nil, append([]string{"read"}, login...)...)
	if !strings.Contains(table, "  1  ") || !strings.Contains(table, subject) || !strings.Contains(table, "KiB") {
		t.Errorf("listing table:\n%s", table)
	}

	saveDir := t.TempDir()
	var shown struct {
		Subject     string
		Text        string
		Attachments []struct {
			Filename string
			Size     int
		}
	}
	if err := json.Unmarshal([]byte(mustRun(t, nil, append([]string{"read", "--show", "1", "--json", "--save", saveDir}, login...)...)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Subject != subject || shown.Text != text {
		t.Errorf("shown: subject %q text %q", shown.Subject, shown.Text)
	}
	saved, err := os.ReadFile(filepath.Join(saveDir, "photo.bin"))
	if err != nil || !bytes.Equal(saved, attachment) || len(shown.Attachments) != 1 || shown.Attachments[0].Size != len(attachment) {
		t.Fatalf("attachment saved from --show: %d bytes (%v), want %d identical; %+v", len(saved), err, len(attachment), shown.Attachments)
	}
	human := mustRun(t, nil, append([]string{"read", "--show", "1"}, login...)...)
	for _, want := range []string{"Subject: " + subject + "\n", "From:    Sender <sender@a.test>\n", text, "[attachment 1: photo.bin, application/octet-stream, 195.3 KiB]"} {
		if !strings.Contains(human, want) {
			t.Errorf("read --show lacks %q:\n%s", want, human)
		}
	}
	raw := mustRun(t, nil, append([]string{"read", "--show", "1", "--raw"}, login...)...)
	if !strings.Contains(raw, "\r\nX-Test: yes\r\n") || strings.Count(raw, "\r\nReceived: ") != 2 || !strings.HasPrefix(raw, "Return-Path: <sender@a.test>\r\n") {
		t.Errorf("read --raw:\n%.600s", raw)
	}

	t.Run("fetchmail", func(t *testing.T) { fetchmailReads(t, b.pop3Addr(), subject, attachment) })

	if out := mustRun(t, nil, append([]string{"read", "--all", "--delete"}, login...)...); out != "deleted 1 messages\n" {
		t.Errorf("read --all --delete: %q", out)
	}
	if out := mustRun(t, nil, append([]string{"read"}, login...)...); out != "no messages\n" {
		t.Errorf("after draining: %q", out)
	}
	if n := len(b.mailbox("alice")); n != 0 {
		t.Errorf("spool still holds %d messages for alice", n)
	}
}

// fetchmailReads has fetchmail, a real POP3 client, fetch the message
// (keeping it on the server) and checks what it delivered.
func fetchmailReads(t *testing.T, addr, subject string, attachment []byte) {
	fm, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Skip("fetchmail is not installed (apt-get install fetchmail); skipping the POP3 interop check")
	}
	dir := t.TempDir()
	host, port, _ := strings.Cut(addr, ":")
	out := filepath.Join(dir, "fetched.eml")
	rc := fmt.Sprintf(`set no syslog
poll %s service %s protocol pop3 auth password
  user "alice" there with password "pw"
  mda "/bin/sh -c 'cat > %s'"
  keep sslproto ""
`, host, port, out) // sslproto "": the test server has no TLS, and fetchmail tries STLS by default
	rcPath := writeFile(t, dir, "fetchmailrc", []byte(rc))
	cmd := exec.Command(fm, "-f", rcPath, "--pidfile", filepath.Join(dir, "pid"), "-v")
	cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, log)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("fetchmail delivered nothing: %v\n%s", err, log)
	}
	p, err := client.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != subject || len(p.Attachments) != 1 || !bytes.Equal(p.Attachments[0].Data, attachment) {
		t.Errorf("fetchmail got subject %q and %d attachments\n%s", p.Subject, len(p.Attachments), log)
	}
	if !strings.Contains(string(log), "1 message for alice") {
		t.Errorf("fetchmail log:\n%s", log)
	}
}

// submitTo sends msg to rcpt through addr with the client package.
func submitTo(t *testing.T, addr, rcpt string, msg []byte) {
	t.Helper()
	from, _ := envelope.ParseReversePath("<sender@a.test>", false)
	to, err := envelope.ParseForwardPath("<"+rcpt+">", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.Submit(context.Background(), client.SubmitOptions{Addr: addr}, from, []envelope.Path{to}, msg); err != nil {
		t.Fatal(err)
	}
}

func pop3Login(t *testing.T, addr, user, pass string) *client.POP3 {
	t.Helper()
	c, err := client.DialPOP3(context.Background(), client.POP3Options{Addr: addr, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPOP3Mailbox reads a mailbox of the real spool over POP3: a 10 MiB
// message byte for byte, deletions only at QUIT, one session at a time,
// and UIDs that survive a restart.
func TestPOP3Mailbox(t *testing.T) {
	b := newNode(t, "b", "127.0.0.63").withPOP3().start()
	var big bytes.Buffer
	big.WriteString("Subject: big\r\n\r\n")
	rng := rand.New(rand.NewPCG(7, 8))
	for big.Len() < 10<<20 {
		if rng.IntN(8) == 0 {
			big.WriteString(".")
		}
		for range rng.IntN(120) {
			big.WriteByte(byte('!' + rng.IntN(94)))
		}
		big.WriteString("\r\n")
	}
	submitTo(t, b.addr, "alice@b.test", big.Bytes())
	submitTo(t, b.addr, "alice@b.test", []byte("Subject: small\r\n\r\nsmall\r\n"))
	waitFor(t, 20*time.Second, "two messages in alice's mailbox", func() bool { return len(b.mailbox("alice")) == 2 })

	c := pop3Login(t, b.pop3Addr(), "alice", "pw")
	list, err := c.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	got, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	// What was sent follows the Return-Path, Delivered-To and Received
	// fields the relay added.
	if !bytes.HasSuffix(got, big.Bytes()) || int64(len(got)) != list[0].Size {
		t.Fatalf("RETR of the 10 MiB message: %d bytes (LIST said %d), sent %d, suffix equal: %v",
			len(got), list[0].Size, big.Len(), bytes.HasSuffix(got, big.Bytes()))
	}

	// A second session while the first holds the mailbox: [IN-USE].
	second, err := client.DialPOP3(context.Background(), client.POP3Options{Addr: b.pop3Addr()})
	if err != nil {
		t.Fatal(err)
	}
	var pe *client.POP3Error
	if err := second.Login("alice", "pw"); !errors.As(err, &pe) || pe.Code != "IN-USE" {
		t.Errorf("second session: %v, want -ERR [IN-USE]", err)
	}
	second.Close()

	// DELE, then the connection drops: nothing is deleted.
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	var c2 *client.POP3
	waitFor(t, 5*time.Second, "the mailbox lock to be released", func() bool {
		d, err := client.DialPOP3(context.Background(), client.POP3Options{Addr: b.pop3Addr()})
		if err != nil {
			return false
		}
		if err := d.Login("alice", "pw"); err != nil {
			d.Close()
			return false
		}
		c2 = d
		return true
	})
	list2, _ := c2.List()
	if len(list2) != 2 || list2[0].UID != list[0].UID || list2[1].UID != list[1].UID {
		t.Fatalf("after DELE and a dropped connection: %+v, want both of %+v", list2, list)
	}
	// DELE, then QUIT: deleted.
	if err := c2.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c2.Quit(); err != nil {
		t.Fatal(err)
	}
	if subjects := b.mailbox("alice"); len(subjects) != 1 || subjects[0] != "small" {
		t.Fatalf("after DELE 1 and QUIT the mailbox holds %q", subjects)
	}

	// The UID of the remaining message survives a restart.
	b.stop()
	b.start()
	c3 := pop3Login(t, b.pop3Addr(), "alice", "pw")
	list3, err := c3.List()
	if err != nil || len(list3) != 1 || list3[0].UID != list[1].UID {
		t.Errorf("after restart: %+v (%v), want UID %s", list3, err, list[1].UID)
	}
}

// TestUsersFileChangesWithoutRestart: `relay user add|passwd|del` edit the
// users file of a running relay, which follows within a few seconds; the same
// credentials work for POP3 and SMTP AUTH.
func TestUsersFileChangesWithoutRestart(t *testing.T) {
	b := newNode(t, "b", "127.0.0.64").withPOP3().start()
	path := b.cfg.UsersFile
	tryPOP3 := func(user, pass string) error {
		c, err := client.DialPOP3(context.Background(), client.POP3Options{Addr: b.pop3Addr()})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Login(user, pass); err != nil {
			return err
		}
		return c.Quit()
	}
	trySMTP := func(user, pass string) error {
		from, _ := envelope.ParseReversePath("<"+user+"@b.test>", false)
		to, _ := envelope.ParseForwardPath("<alice@b.test>", false)
		_, _, err := client.Submit(context.Background(), client.SubmitOptions{Addr: b.addr, Username: user, Password: pass}, from, []envelope.Path{to}, []byte("Subject: auth\r\n\r\nx\r\n"))
		return err
	}
	// The CLI edits the running node's users file through a config that
	// names it.
	dir := t.TempDir()
	cfgPath := writeFile(t, dir, "relay.toml", fmt.Appendf(nil, "data_dir = %q\nusers_file = %q\n", dir, path))
	first := writeFile(t, dir, "first", []byte("first\n"))
	second := writeFile(t, dir, "second", []byte("second\n"))
	if out := mustRun(t, nil, "user", "add", "carol", "--password-file", first, "--config", cfgPath); out != "user carol added to "+path+"\n" {
		t.Errorf("user add said %q", out)
	}
	within := 3 * relayUsersPoll
	waitFor(t, within, "carol to log in to POP3", func() bool { return tryPOP3("carol", "first") == nil })
	if err := trySMTP("carol", "first"); err != nil {
		t.Errorf("SMTP AUTH with the POP3 credentials: %v", err)
	}
	mustRun(t, nil, "user", "passwd", "carol", "--password-file", second, "--config", cfgPath)
	waitFor(t, within, "the old password to stop working", func() bool { return tryPOP3("carol", "first") != nil })
	if err := tryPOP3("carol", "second"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if out := mustRun(t, nil, "user", "del", "carol", "--config", cfgPath); out != "user carol removed from "+path+"\n" {
		t.Errorf("user del said %q", out)
	}
	waitFor(t, within, "carol to be gone", func() bool { return tryPOP3("carol", "second") != nil })
	if _, errOut, code := run(t, nil, nil, "user", "del", "carol", "--config", cfgPath); code == 0 || !strings.Contains(errOut, `no user "carol"`) {
		t.Errorf("deleting a missing user: exit %d, %q", code, errOut)
	}
	if err := trySMTP("carol", "second"); err == nil {
		t.Error("a deleted user still authenticates over SMTP")
	}
}

// relayUsersPoll mirrors relay.UsersPollInterval, plus the failed-login
// delay the polling attempts above run into.
const relayUsersPoll = 2*time.Second + 2*time.Second

// TestClientCLIErrors: each mistake a user can make gives one line on
// stderr, naming what went wrong, and a non-zero exit.
func TestClientCLIErrors(t *testing.T) {
	b := newNode(t, "b", "127.0.0.65").withPOP3().start()
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", []byte("pw\n"))
	bad := writeFile(t, dir, "bad", []byte("not it\n"))
	read := func(extra ...string) []string { return append([]string{"read", "--server", b.pop3Addr()}, extra...) }
	sendArgs := func(extra ...string) []string {
		return append([]string{"send", "--server", b.addr, "--from", "sender@a.test"}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"wrong password", read("--user", "alice", "--password-file", bad), nil, "relay: read: login as alice at " + b.pop3Addr() + ": PASS: -ERR [AUTH] Invalid user name or password"},
		{"unknown user", read("--user", "mallory", "--password-file", pw), nil, "-ERR [AUTH] Invalid user name or password"},
		{"no password", read("--user", "alice"), nil, "--user needs --password-file FILE or RELAY_PASSWORD"},
		{"unreachable POP3 server", []string{"read", "--server", "127.0.0.65:1", "--user", "alice", "--password-file", pw}, nil, "relay: read: connect to 127.0.0.65:1:"},
		{"no such message", read("--user", "alice", "--password-file", pw, "--show", "7"), nil, "RETR: -ERR No such message"},
		{"missing --to", sendArgs("--subject", "x"), nil, "relay: send: missing --to ADDRESS"},
		{"unreachable SMTP server", []string{"send", "--server", "127.0.0.65:1", "--from", "a@a.test", "--to", "alice@b.test"}, nil, "relay: send: connect to 127.0.0.65:1:"},
		{"refused recipient", sendArgs("--to", "alice@b.test", "--to", "nobody@b.test"), nil, "relay: send: recipient <nobody@b.test> refused: 550 5.1.1 No such user here"},
		{"bad route", sendArgs("--to", "alice@b.test", "--route", "h1,h2"), nil, `--route "h1,h2": want @host1,@host2`},
		{"bad SMTP password", sendArgs("--to", "alice@b.test", "--user", "alice"), []string{"RELAY_PASSWORD=nope"}, "relay: send: AUTH refused: 535 5.7.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, []byte("body\n"), tc.env, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q, want one line containing %q", errOut, tc.want)
			}
		})
	}
	// The password from the environment works, and a source route is
	// formatted and followed: <@b.test:alice@b.test> is for b itself.
	out, errOut, code := run(t, []byte("via route\n"), []string{"RELAY_PASSWORD=pw"}, sendArgs("--to", "alice@b.test", "--route", "@b.test", "--subject", "routed")...)
	if code != 0 || len(strings.TrimSpace(out)) != 13 {
		t.Fatalf("send with --route: exit %d, %q %q", code, out, errOut)
	}
	waitFor(t, 10*time.Second, "the routed message", func() bool { return len(b.mailbox("alice")) == 1 })
	out, errOut, code = run(t, nil, []string{"RELAY_PASSWORD=pw"}, read("--user", "alice")...)
	if code != 0 || !strings.Contains(out, "routed") {
		t.Errorf("read with RELAY_PASSWORD: exit %d, %q %q", code, out, errOut)
	}
}

// writeCert writes a self-signed certificate for ip and its key as PEM
// files in dir.
func writeCert(t *testing.T, dir, ip string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "b.test"},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath = writeFile(t, dir, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPath = writeFile(t, dir, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certPath, keyPath
}

// TestClientOverTLS: relay send --starttls --user and relay read
// --starttls (and --tls on a listen_tls port) verify the server with --ca
// and work; from loopback, logins in the clear work too.
func TestClientOverTLS(t *testing.T) {
	const ip = "127.0.0.66"
	dir := t.TempDir()
	certPath, keyPath := writeCert(t, dir, ip)
	b := newNode(t, "b", ip)
	b.cfg.TLS.Cert, b.cfg.TLS.Key = certPath, keyPath
	b.cfg.POP3.Listen = []string{freeAddr(t, ip)}
	b.cfg.POP3.ListenTLS = []string{freeAddr(t, ip)}
	b.start()
	pw := writeFile(t, dir, "pw", []byte("pw\n"))

	// From a loopback address a login in the clear is accepted, as
	// Dovecot does (the connection never leaves the machine); from
	// elsewhere it is refused before the password is sent (pop3d's and
	// smtpd's TestLoginsInTheClear).
	mustRun(t, []byte("in the clear\n"), "send", "--server", b.addr, "--from", "alice@b.test", "--to", "bob@b.test", "--user", "alice", "--password-file", pw)
	waitFor(t, 10*time.Second, "delivery to bob", func() bool { return len(b.mailbox("bob")) == 1 })
	mustRun(t, nil, "read", "--server", b.pop3Addr(), "--user", "bob", "--password-file", pw, "--all", "--delete")
	// With TLS, but a certificate not trusted: refused by the client.
	_, errOut, code := run(t, nil, nil, "read", "--server", b.pop3Addr(), "--user", "bob", "--password-file", pw, "--starttls")
	if code == 0 || !strings.Contains(errOut, "certificate") {
		t.Errorf("read --starttls without --ca: exit %d, %q", code, errOut)
	}

	mustRun(t, []byte("over TLS\n"), "send", "--server", b.addr, "--starttls", "--ca", certPath,
		"--user", "alice", "--password-file", pw, "--from", "alice@b.test", "--to", "bob@b.test", "--subject", "secure")
	waitFor(t, 10*time.Second, "delivery to bob", func() bool { return len(b.mailbox("bob")) == 1 })
	out := mustRun(t, nil, "read", "--server", b.pop3Addr(), "--starttls", "--ca", certPath, "--user", "bob", "--password-file", pw, "--show", "1")
	if !strings.Contains(out, "Subject: secure\n") || !strings.Contains(out, "over TLS") {
		t.Errorf("read --starttls --show 1:\n%s", out)
	}
	out = mustRun(t, nil, "read", "--server", b.cfg.POP3.ListenTLS[0], "--tls", "--ca", certPath, "--user", "bob", "--password-file", pw)
	if !strings.Contains(out, "secure") {
		t.Errorf("read --tls:\n%s", out)
	}
	raw := mustRun(t, nil, "read", "--server", b.pop3Addr(), "--starttls", "--ca", certPath, "--user", "bob", "--password-file", pw, "--show", "1", "--raw")
	if !strings.Contains(raw, "with ESMTPSA") {
		t.Errorf("the Received header does not record TLS and AUTH:\n%.400s", raw)
	}
}
