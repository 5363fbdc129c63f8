package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// postfixSubmission is a private Postfix instance run as a submission
// server: STARTTLS with a certificate from a test CA, AUTH (Cyrus SASL,
// sasldb) only inside TLS, relaying only for logged-in clients, to one
// destination. The system's Postfix is neither used nor touched.
type postfixSubmission struct {
	etc, addr, maillog string
}

// startPostfixSubmission starts the instance on ip, with user@pf.test /
// password, relaying mail for domain to relayTo. It skips the test when
// Postfix or Cyrus SASL's tools are not installed or not root.
func startPostfixSubmission(t *testing.T, ip string, ca *testCA, user_, password, domain, relayTo string) *postfixSubmission {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs root: skipping the Postfix submission test")
	}
	for _, p := range []string{"/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/sbin/postmap", "/usr/share/postfix/master.cf.dist", "/usr/sbin/saslpasswd2"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s not installed (Debian packages postfix, sasl2-bin, libsasl2-modules): skipping the Postfix submission test", p)
		}
	}
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Skip("no user postfix: skipping the Postfix submission test")
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	// Postfix checks that its directories belong to root and are not
	// writable by others: a directory of its own, not t.TempDir's parents
	// alone.
	dir, err := os.MkdirTemp("", "relay-pfsub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	etc, spoolDir, data := filepath.Join(dir, "etc"), filepath.Join(dir, "spool"), filepath.Join(dir, "data")
	// Debian's Postfix reads cyrus_sasl_config_path + "/sasl"; upstream's
	// reads the path itself: smtpd.conf goes in both.
	for _, d := range []string{etc, spoolDir, data, filepath.Join(etc, "sasl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(data, uid, gid)
	cert, key := ca.issue(t, etc, "smtp.pf.test")
	os.Chmod(key, 0o600)
	addr := freeAddr(t, ip)
	host, port, _ := net.SplitHostPort(addr)
	relayHost, relayPort, _ := net.SplitHostPort(relayTo)
	maillog := filepath.Join(dir, "maillog")
	sasldb := filepath.Join(etc, "sasldb2")
	masterCF, err := os.ReadFile("/usr/share/postfix/master.cf.dist")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"master.cf":  string(masterCF),
		"transport":  fmt.Sprintf("%s smtp:[%s]:%s\n", domain, relayHost, relayPort),
		"smtpd.conf": fmt.Sprintf("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: %s\n", sasldb),
		"main.cf": fmt.Sprintf(`# relay integration test: a private submission server
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
syslog_name = postfix-relay-submission
myhostname = smtp.pf.test
mydomain = pf.test
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relay_domains =
transport_maps = hash:%[3]s/transport
default_transport = error:no other destination
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 10.255.255.0/24
smtpd_tls_cert_file = %[4]s
smtpd_tls_key_file = %[5]s
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = %[3]s
smtpd_sasl_local_domain = pf.test
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_tls_security_level = none
biff = no
append_dot_mydomain = no
maillog_file_prefixes = /var, /dev/stdout, %[6]s
maillog_file = %[7]s
`, spoolDir, data, etc, cert, key, dir, maillog),
	}
	files["sasl/smtpd.conf"] = files["smtpd.conf"]
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(maillog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(maillog, uid, gid)
	p := &postfixSubmission{etc: etc, addr: addr, maillog: maillog}
	for _, u := range []string{user_, "bob"} {
		pw := exec.Command("/usr/sbin/saslpasswd2", "-p", "-c", "-f", sasldb, "-u", "pf.test", u)
		pw.Stdin = strings.NewReader(password)
		if out, err := pw.CombinedOutput(); err != nil {
			t.Fatalf("saslpasswd2: %v: %s", err, out)
		}
	}
	os.Chown(sasldb, 0, gid)
	os.Chmod(sasldb, 0o640)
	for _, args := range [][]string{
		{"postmap", "-c", etc, "hash:" + filepath.Join(etc, "transport")},
		{"postconf", "-c", etc, "-MX", "smtp/inet"},
		{"postconf", "-c", etc, "-M", fmt.Sprintf("%s:%s/inet=%s:%s inet n - n - - smtpd", host, port, host, port)},
		{"postconf", "-c", etc, "-F", "*/*/chroot = n"},
		{"postfix", "-c", etc, "check"},
		{"postfix", "-c", etc, "start"},
	} {
		p.cmd(t, args...)
	}
	t.Cleanup(func() {
		p.cmd(t, "postfix", "-c", etc, "stop")
		if t.Failed() {
			if b, err := os.ReadFile(maillog); err == nil {
				t.Logf("Postfix log:\n%s", b)
			}
		}
	})
	waitFor(t, 10*time.Second, "Postfix to listen on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func (p *postfixSubmission) cmd(t *testing.T, args ...string) {
	t.Helper()
	c := exec.Command(args[0], args[1:]...)
	c.Env = append(os.Environ(), "MAIL_CONFIG="+p.etc, "PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postfix/sbin")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestSmarthostPostfixSubmission: a route with AUTH delivers through
// Postfix running as a submission server (STARTTLS, then AUTH, relaying
// only for logged-in users); a wrong password defers with Postfix's reply.
func TestSmarthostPostfixSubmission(t *testing.T) {
	ca := newTestCA(t)
	c := newNode(t, "c", "127.0.27.14").start()
	pf := startPostfixSubmission(t, "127.0.27.10", ca, "alice", "s3cret", "c.test", c.addr)

	a := newNode(t, "a", "127.0.27.12")
	good := smarthostRoute(t, "c.test", "alice@pf.test", passwordFile(t, "s3cret"), ca.file, "smtp.pf.test", pf.addr)
	a.cfg.Routes = append(a.cfg.Routes, good)
	// Another user (a lane per login), with a wrong password.
	bad := smarthostRoute(t, "wrong.test", "bob@pf.test", passwordFile(t, "guess"), ca.file, "smtp.pf.test", pf.addr)
	a.cfg.Routes = append(a.cfg.Routes, bad)
	a.start()

	send(t, a.addr, "alice@c.test", "through postfix")
	waitFor(t, 20*time.Second, "delivery at c through Postfix", func() bool { return len(c.mailbox("alice")) == 1 })

	send(t, a.addr, "someone@wrong.test", "wrong password at postfix")
	waitFor(t, 20*time.Second, "the deferral", func() bool {
		for _, m := range a.queued() {
			if r := m.Recipients[0]; r.Status == spool.StatusDeferred && strings.Contains(r.LastReply, "535") {
				t.Logf("deferred: %s", r.LastReply)
				return true
			}
		}
		return false
	})
	log, _ := os.ReadFile(pf.maillog)
	if !strings.Contains(string(log), "sasl_username=alice@pf.test") {
		t.Errorf("Postfix's log has no login of alice@pf.test:\n%s", log)
	}
}
