package relay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
)

// The tests of this file listen and dial on 127.0.24.0/24 only.

// TestLoopbackBanSaysWhy: a loopback client (here without TLS and without
// allow_insecure_auth, as on a first run) that made ten failed logins is
// not told that its right password is wrong: POP3 says -ERR [SYS/TEMP]
// and SMTP 421 4.7.0, both naming the address, the minutes left, and the
// command that lifts the ban; `relay user unban` (its admin API call)
// lets the right password in again.
func TestLoopbackBanSaysWhy(t *testing.T) {
	const ip = "127.0.24.21"
	cfg := testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.24.20:0"}
	cfg.POP3.Listen = []string{"127.0.24.20:0"}
	cfg.Admin.Socket = filepath.Join(t.TempDir(), "admin.sock")
	cfg.AllowInsecureAuth = false
	r, _ := launch(t, cfg, Options{}, func(r *Relay) { r.logins.base = time.Millisecond })
	popAddr, smtpAddr := r.POP3Addrs()[0], r.SMTPAddrs()[0]

	pop := func(user, pass string) string {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", popAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		fmt.Fprintf(nc, "USER %s\r\n", user)
		if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
			return strings.TrimSpace(l)
		}
		fmt.Fprintf(nc, "PASS %s\r\n", pass)
		l, _ := br.ReadString('\n')
		return strings.TrimSpace(l)
	}
	for i := 0; i < loginBanAfter; i++ {
		if got := pop("alice", "wrong"); !strings.HasPrefix(got, "-ERR [AUTH] Invalid user name or password") {
			t.Fatalf("wrong password %d: %q", i+1, got)
		}
	}
	got := pop("alice", "pw-alice")
	want := "-ERR [SYS/TEMP] Too many failed logins from " + ip + ": temporarily blocked for 15 more minutes; lift it with: relay user unban " + ip
	if got != want {
		t.Fatalf("banned loopback client, right password, over POP3:\n got %q\nwant %q", got, want)
	}

	c := dialFrom(t, ip, smtpAddr, "220 ")
	c.Cmd("EHLO client.test", "250 ")
	smtpWant := "421 4.7.0 Too many failed logins from " + ip + ": temporarily blocked for 15 more minutes; lift it with: relay user unban " + ip
	if line := c.Cmd(plainAuth("", "alice", "pw-alice"), "421 4.7.0"); !strings.Contains(line, smtpWant) {
		t.Fatalf("banned loopback client, right password, over SMTP: %q, want %q", line, smtpWant)
	}

	if u, err := client.NewAdmin(cfg.Admin.Socket).Unban(context.Background(), ip); err != nil || !u.Forgotten {
		t.Fatalf("unban: %+v, %v", u, err)
	}
	if got := pop("alice", "pw-alice"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("after relay user unban: %q", got)
	}
}

// TestBanRefusalText: the hint to the operator's command goes only to
// clients on the relay's own machine; the minutes left count down.
func TestBanRefusalText(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	l := newLoginLimiter()
	l.now = clock.Now
	remote, local := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("::1")
	for _, ip := range []netip.Addr{remote, local} {
		for i := 0; i < loginBanAfter; i++ {
			l.begin(ip)
			l.failed(ip)
		}
	}
	if got, want := l.refusal(remote), "Too many failed logins from 192.0.2.7: temporarily blocked for 15 more minutes"; got != want {
		t.Errorf("remote: %q, want %q", got, want)
	}
	clock.Add(14*time.Minute + 30*time.Second)
	if got, want := l.refusal(local), "Too many failed logins from ::1: temporarily blocked for 1 more minute; lift it with: relay user unban ::1"; got != want {
		t.Errorf("loopback: %q, want %q", got, want)
	}
}
