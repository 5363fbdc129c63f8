package relay

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Failed logins per client address (SMTP AUTH and POP3 share them):
// each failure makes the next answer slower, and loginBanAfter failures
// within loginWindow ban the address for loginBanFor. Password guessing
// becomes slow; a user who mistypes once never notices.
//
// The budget holds whatever the interleaving: a success (by any user)
// forgives nothing, failures only age out; and an attempt is counted as
// in flight before its password is checked, so parallel attempts cannot
// outrun the count. In any loginWindow an address gets at most
// loginBanAfter wrong guesses checked.
const (
	loginBaseDelay = 500 * time.Millisecond
	loginMaxDelay  = 8 * time.Second
	loginWindow    = 15 * time.Minute // failures older than this are forgotten
	loginBanAfter  = 10               // failures (and attempts in flight) within the window
	loginBanFor    = 15 * time.Minute
	loginMaxTrack  = 100000 // addresses remembered at most: memory stays bounded
)

type loginRecord struct {
	failures    []time.Time // within loginWindow, oldest first; at most loginBanAfter
	inFlight    int         // attempts begun and not yet ended
	bannedUntil time.Time
}

// prune drops the failures that have aged out.
func (r *loginRecord) prune(now time.Time) {
	i := 0
	for i < len(r.failures) && now.Sub(r.failures[i]) >= loginWindow {
		i++
	}
	r.failures = r.failures[i:]
}

// idle reports whether r holds nothing worth remembering at now.
func (r *loginRecord) idle(now time.Time) bool {
	r.prune(now)
	return len(r.failures) == 0 && r.inFlight == 0 && !now.Before(r.bannedUntil)
}

// loginLimiter remembers recent failed logins by client address.
type loginLimiter struct {
	mu   sync.Mutex
	ips  map[netip.Addr]*loginRecord
	now  func() time.Time
	base time.Duration // delay after the first failure (tests shorten it)
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{ips: map[netip.Addr]*loginRecord{}, now: time.Now, base: loginBaseDelay}
}

// begin reserves one login attempt for ip before its credentials are
// checked. It returns false, reserving nothing, when the address is
// banned or its budget is taken by failures and attempts in flight; the
// caller then refuses without checking. A true answer must be followed
// by exactly one failed or succeeded.
func (l *loginLimiter) begin(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.ips[ip]
	if r == nil {
		if len(l.ips) >= loginMaxTrack {
			l.forgetOldLocked(now)
		}
		r = &loginRecord{}
		l.ips[ip] = r
	}
	r.prune(now)
	if now.Before(r.bannedUntil) || len(r.failures)+r.inFlight >= loginBanAfter {
		return false
	}
	r.inFlight++
	return true
}

// failed ends an attempt begun with begin as a failed login and returns
// how long to wait before answering it.
func (l *loginLimiter) failed(ip netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.ips[ip]
	if r == nil { // unbanned (forgotten) while in flight
		r = &loginRecord{inFlight: 1}
		l.ips[ip] = r
	}
	r.inFlight = max(r.inFlight-1, 0)
	r.prune(now)
	r.failures = append(r.failures, now)
	if n := len(r.failures); n > loginBanAfter {
		r.failures = r.failures[n-loginBanAfter:]
	}
	if len(r.failures) >= loginBanAfter {
		r.bannedUntil = now.Add(loginBanFor)
	}
	d := l.base << min(len(r.failures)-1, 5)
	return min(d, loginMaxDelay)
}

// succeeded ends an attempt begun with begin as a successful login. It
// forgives nothing: another user's right password must not wipe the
// failures of guesses at this one's (the failures age out instead).
func (l *loginLimiter) succeeded(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.ips[ip]; r != nil {
		r.inFlight = max(r.inFlight-1, 0)
	}
}

// refusal is what a login refused by begin is told: never "invalid
// password" (the password was not even checked), but that there were too
// many failures, and for how long the address is refused. A client on
// the relay's own machine is also told how its operator lifts the ban.
func (l *loginLimiter) refusal(ip netip.Addr) string {
	l.mu.Lock()
	left := time.Duration(0)
	if r := l.ips[ip]; r != nil {
		left = r.bannedUntil.Sub(l.now())
	}
	l.mu.Unlock()
	text := fmt.Sprintf("Too many failed logins from %s: temporarily blocked", ip)
	if left > 0 {
		unit := "minutes"
		mins := int((left + time.Minute - 1) / time.Minute)
		if mins == 1 {
			unit = "minute"
		}
		text += fmt.Sprintf(" for %d more %s", mins, unit)
	} else {
		text += ", try again later" // the budget is taken by attempts still being checked
	}
	if ip.IsLoopback() {
		text += fmt.Sprintf("; lift it with: relay user unban %s", ip)
	}
	return text
}

// banned reports whether ip is banned now.
func (l *loginLimiter) banned(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.ips[ip]
	return r != nil && l.now().Before(r.bannedUntil)
}

// unban lifts the ban of ip and forgets its failures (the operator's
// `relay user unban`). It reports whether there was anything to forget.
func (l *loginLimiter) unban(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.ips[ip]
	if r == nil {
		return false
	}
	had := len(r.failures) > 0 || l.now().Before(r.bannedUntil)
	r.failures, r.bannedUntil = nil, time.Time{}
	if r.inFlight == 0 {
		delete(l.ips, ip)
	}
	return had
}

func (l *loginLimiter) forgetOldLocked(now time.Time) {
	for ip, r := range l.ips {
		if r.idle(now) {
			delete(l.ips, ip)
		}
	}
}
