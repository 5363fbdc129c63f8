package relay

import (
	"net/netip"
	"sync"
	"time"
)

// Failed logins per client address (SMTP AUTH and POP3 share them):
// each failure makes the next answer slower, and a burst of failures bans
// the address for a while. Password guessing becomes slow; a user who
// mistypes once never notices.
const (
	loginBaseDelay = 500 * time.Millisecond
	loginMaxDelay  = 8 * time.Second
	loginWindow    = 10 * time.Minute // failures older than this are forgotten
	loginBanAfter  = 10               // failures within the window
	loginBanFor    = 15 * time.Minute
	loginMaxTrack  = 100000 // addresses remembered at most: memory stays bounded
)

type loginRecord struct {
	failures    int
	last        time.Time
	bannedUntil time.Time
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

// banned reports whether ip may not try to log in now.
func (l *loginLimiter) banned(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.ips[ip]
	return r != nil && l.now().Before(r.bannedUntil)
}

// failed records a failed login and returns how long to wait before
// answering it.
func (l *loginLimiter) failed(ip netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.ips[ip]
	if r == nil || now.Sub(r.last) > loginWindow {
		if len(l.ips) >= loginMaxTrack {
			l.forgetOldLocked(now)
		}
		r = &loginRecord{}
		l.ips[ip] = r
	}
	r.failures++
	r.last = now
	if r.failures >= loginBanAfter {
		r.bannedUntil = now.Add(loginBanFor)
	}
	d := l.base << min(r.failures-1, 5)
	return min(d, loginMaxDelay)
}

// succeeded forgets the failures of ip.
func (l *loginLimiter) succeeded(ip netip.Addr) {
	l.mu.Lock()
	delete(l.ips, ip)
	l.mu.Unlock()
}

func (l *loginLimiter) forgetOldLocked(now time.Time) {
	for ip, r := range l.ips {
		if now.Sub(r.last) > loginWindow && now.After(r.bannedUntil) {
			delete(l.ips, ip)
		}
	}
}
