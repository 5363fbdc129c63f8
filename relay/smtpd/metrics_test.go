package smtpd

import (
	"sync"
	"testing"
	"time"
)

type recMetrics struct {
	mu       sync.Mutex
	refused  []string // "COMMAND code enhanced"
	accepted int
}

func (m *recMetrics) Refused(command string, r Reply) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refused = append(m.refused, command+" "+r.Enhanced)
}

func (m *recMetrics) Accepted(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d > 0 {
		m.accepted++
	}
}

// TestMetrics: refusals are reported with their command (a made-up verb
// as OTHER) and enhanced code, accepted messages once each, and open
// connections are counted.
func TestMetrics(t *testing.T) {
	m := &recMetrics{}
	srv := &Server{Metrics: m}
	addr := startServer(t, srv)
	c := dial(t, addr)
	c.cmd("XYZZY", "500 5.5.1")
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<nobody@b.test>", "550 5.1.1")
	c.cmd("RCPT TO:<u@b.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: x\r\n\r\nbody\r\n.", "250 ")
	if n := srv.Connections(); n != 1 {
		t.Errorf("Connections() = %d with one client", n)
	}
	c.cmd("QUIT", "221 ")
	m.mu.Lock()
	defer m.mu.Unlock()
	want := []string{"OTHER 5.5.1", "RCPT 5.1.1"}
	if len(m.refused) != len(want) || m.refused[0] != want[0] || m.refused[1] != want[1] {
		t.Errorf("refusals %q, want %q", m.refused, want)
	}
	if m.accepted != 1 {
		t.Errorf("%d messages reported accepted, want 1", m.accepted)
	}
}
