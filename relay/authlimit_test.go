package relay

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
)

// The tests of this file listen and dial on 127.0.20.0/24 only.

// fakeClock is a settable clock for the login limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// secConfig is testConfig listening on 127.0.20.1.
func secConfig(t *testing.T) *config.Config {
	cfg := testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.20.1:0"}
	cfg.AllowInsecureAuth = true
	return cfg
}

// dialFrom opens an SMTP session to addr from the source address from
// (127.0.20.x) and reads the greeting, which must start with greet.
func dialFrom(t testing.TB, from, addr, greet string) *smtptest.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &smtptest.Client{T: t, Conn: nc, R: bufio.NewReader(nc)}
	c.Expect(greet)
	return c
}

func plainAuth(authzid, user, pw string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(authzid+"\x00"+user+"\x00"+pw))
}

// attack plays an attacker against l for the given span of (fake) time:
// each round it tries the attempts of round in turn, back to back
// (waiting out only the answer delay), and when refused it waits a
// second and tries again. It returns the times of the wrong passwords
// that were actually checked.
func attack(l *loginLimiter, clock *fakeClock, ip netip.Addr, span time.Duration, round []bool) []time.Time {
	var guesses []time.Time
	end := clock.Now().Add(span)
	for i := 0; clock.Now().Before(end); {
		if !l.begin(ip) {
			clock.Add(time.Second)
			continue
		}
		if round[i%len(round)] {
			l.succeeded(ip)
			clock.Add(10 * time.Millisecond)
		} else {
			guesses = append(guesses, clock.Now())
			clock.Add(l.failed(ip))
		}
		i++
	}
	return guesses
}

// maxIn is the largest number of times within any window of length w.
func maxIn(ts []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// TestLoginBudgetWhateverTheInterleaving: guessing at bob's password from
// one address gets at most ten guesses checked in any 15 minutes, however
// the attacker mixes in alice's right password (issue 18, 1a), and
// however long it keeps at it.
func TestLoginBudgetWhateverTheInterleaving(t *testing.T) {
	ip := netip.MustParseAddr("127.0.20.2")
	for _, tc := range []struct {
		name  string
		round []bool // true: a right password (alice), false: a wrong one (bob)
	}{
		{"wrong only", []bool{false}},
		{"9 wrong, 1 right", []bool{false, false, false, false, false, false, false, false, false, true}},
		{"1 wrong, 1 right", []bool{false, true}},
	} {
		clock := &fakeClock{t: time.Unix(1e9, 0)}
		l := newLoginLimiter()
		l.now = clock.Now
		guesses := attack(l, clock, ip, time.Hour, tc.round)
		per15 := maxIn(guesses, 15*time.Minute)
		t.Logf("%s: %d wrong passwords checked in an hour, at most %d in any 15 minutes", tc.name, len(guesses), per15)
		if per15 > loginBanAfter || len(guesses) > 4*loginBanAfter {
			t.Errorf("%s: %d guesses per 15 minutes, %d per hour; want at most 10 and 40", tc.name, per15, len(guesses))
		}
		if len(guesses) < 3*loginBanAfter {
			t.Errorf("%s: only %d guesses in an hour: the ban does not lift", tc.name, len(guesses))
		}
	}
}

// TestLoginBudgetParallel: attempts in flight count before their
// password is checked, so 40 at once from one address get 10 checked.
func TestLoginBudgetParallel(t *testing.T) {
	l := newLoginLimiter()
	ip := netip.MustParseAddr("127.0.20.3")
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		checked, banned int
		start           = make(chan struct{})
	)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok := l.begin(ip)
			if ok {
				time.Sleep(5 * time.Millisecond) // the bcrypt check
				l.failed(ip)
			}
			mu.Lock()
			if ok {
				checked++
			} else {
				banned++
			}
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if checked != loginBanAfter || banned != 40-loginBanAfter {
		t.Fatalf("40 parallel attempts: %d checked, %d refused; want %d and %d", checked, banned, loginBanAfter, 40-loginBanAfter)
	}
	if !l.banned(ip) {
		t.Fatal("not banned after ten failures")
	}
}

// TestLoginBanOverSMTP is the attack of issue 18 as sent: 40 parallel
// wrong AUTHs from a fresh address get ten 535s and thirty 421s; then 9
// wrong for bob and a right one for alice, from another address, do not
// reset the count: the next attempt after ten wrong is refused, and the
// ban lifts when the failures have aged out.
func TestLoginBanOverSMTP(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	r, _ := launch(t, secConfig(t), Options{}, func(r *Relay) {
		r.logins.base = time.Millisecond
		r.logins.now = clock.Now
	})
	addr := r.SMTPAddrs()[0]

	// (b) 40 in parallel, each on its own session.
	replies := make(chan string, 40)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies <- rawAuth("127.0.20.4", addr, plainAuth("", "alice", fmt.Sprintf("guess-%d", i)))
		}()
	}
	wg.Wait()
	close(replies)
	counts := map[string]int{}
	for r := range replies {
		counts[r]++
	}
	t.Logf("40 parallel wrong AUTHs: %v", counts)
	if counts["535 5.7.8"] != loginBanAfter || counts["421 4.7.0"] != 40-loginBanAfter {
		t.Fatalf("40 parallel wrong AUTHs answered %v; want 10 × 535 5.7.8, 30 × 421 4.7.0", counts)
	}

	// (a) a right password for alice between wrong ones for bob.
	ip := "127.0.20.5"
	wrongs := 0
	for round := 0; round < 3; round++ {
		for i := 0; i < 9; i++ {
			got := rawAuth(ip, addr, plainAuth("", "bob", "guess"))
			if got == "421 4.7.0" {
				break
			}
			if got != "535 5.7.8" {
				t.Fatalf("wrong password: %q", got)
			}
			wrongs++
		}
		if got := rawAuth(ip, addr, plainAuth("", "alice", "pw-alice")); got != "235 2.7.0" && got != "421 4.7.0" {
			t.Fatalf("alice's right password: %q", got)
		}
	}
	if wrongs != loginBanAfter {
		t.Fatalf("%d wrong passwords checked with alice's logins in between; want %d", wrongs, loginBanAfter)
	}
	clock.Add(loginBanFor)
	if got := rawAuth(ip, addr, plainAuth("", "alice", "pw-alice")); got != "235 2.7.0" {
		t.Fatalf("after the ban: %q", got)
	}
}

// rawAuth sends one AUTH from the source address from and returns the
// reply's code and enhanced code ("535 5.7.8"), or the error.
func rawAuth(from, addr, auth string) string {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	read := func() string {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err.Error()
			}
			if len(line) < 4 || line[3] != '-' {
				f := strings.Fields(line)
				if len(f) < 2 {
					return line
				}
				return f[0] + " " + f[1]
			}
		}
	}
	read()
	fmt.Fprintf(nc, "EHLO attacker.test\r\n")
	read()
	fmt.Fprintf(nc, "%s\r\n", auth)
	return read()
}

// TestAuthzidRefused: AUTH PLAIN asking to act as bob with alice's
// credentials is refused (before any password is checked); an authzid
// equal to the authcid is no request at all and succeeds.
func TestAuthzidRefused(t *testing.T) {
	r, _ := launch(t, secConfig(t), Options{}, nil)
	addr := r.SMTPAddrs()[0]
	c := dialFrom(t, "127.0.20.6", addr, "220 ")
	c.Cmd("EHLO client.test", "250 ")
	c.Cmd(plainAuth("bob", "alice", "pw-alice"), "535 5.7.8 Authorization identity")
	c.Cmd(plainAuth("bob", "alice", "wrong"), "535 5.7.8 Authorization identity")
	c.Cmd(plainAuth("ALICE", "alice", "pw-alice"), "235 2.7.0")
	// Logged in as alice, not bob: bob's address is not hers to use.
	c.Cmd("MAIL FROM:<bob@b.test>", "553 5.7.1")
	c.Cmd("MAIL FROM:<alice@b.test>", "250 ")
	if r.logins.banned(netip.MustParseAddr("127.0.20.6")) {
		t.Fatal("refused authzids counted as failed logins")
	}
}

// TestPOP3BanIsTemporaryAndUnban: a banned address is told over POP3
// that the block is temporary (not that its right password is wrong),
// and the operator's unban through the admin socket lets it in at once.
func TestPOP3BanIsTemporaryAndUnban(t *testing.T) {
	cfg := secConfig(t)
	cfg.POP3.Listen = []string{"127.0.20.1:0"}
	cfg.Admin.Socket = filepath.Join(t.TempDir(), "admin.sock")
	r, _ := launch(t, cfg, Options{}, func(r *Relay) { r.logins.base = time.Millisecond })
	addr := r.POP3Addrs()[0]
	ip := "127.0.20.7"
	pop := func() (*bufio.Reader, net.Conn) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		return br, nc
	}
	cmd := func(br *bufio.Reader, nc net.Conn, line string) string {
		fmt.Fprintf(nc, "%s\r\n", line)
		s, _ := br.ReadString('\n')
		return strings.TrimSpace(s)
	}
	for i := 0; i < loginBanAfter; i++ {
		br, nc := pop()
		cmd(br, nc, "USER alice")
		if got := cmd(br, nc, "PASS wrong"); !strings.HasPrefix(got, "-ERR [AUTH] ") {
			t.Fatalf("wrong password %d: %q", i+1, got)
		}
	}
	br, nc := pop()
	cmd(br, nc, "USER alice")
	if got := cmd(br, nc, "PASS pw-alice"); !strings.HasPrefix(got, "-ERR [SYS/TEMP] ") || !strings.Contains(got, "temporarily blocked") {
		t.Fatalf("banned address with the right password: %q, want -ERR [SYS/TEMP] ... temporarily blocked", got)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection still open after the block")
	}

	u, err := client.NewAdmin(cfg.Admin.Socket).Unban(context.Background(), ip)
	if err != nil || !u.Forgotten || u.Address != ip {
		t.Fatalf("unban: %+v, %v", u, err)
	}
	br, nc = pop()
	cmd(br, nc, "USER alice")
	if got := cmd(br, nc, "PASS pw-alice"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("after unban: %q", got)
	}
	u, err = client.NewAdmin(cfg.Admin.Socket).Unban(context.Background(), "127.0.20.8")
	if err != nil || u.Forgotten {
		t.Fatalf("unban of an address never banned: %+v, %v", u, err)
	}
}
