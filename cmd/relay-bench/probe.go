package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/textproto"
	"time"
)

// probe measures accept latency, which smtp-source does not report: on one
// SMTP session of its own, beside the load, it sends a message of the load's
// size and recipient count every interval and times each one from writing
// the end-of-data "." to reading the reply, the time the server took to
// make the message safe. A message whose reply is not 250 has no sample.
type probe struct {
	addr     string
	size     int
	rcpts    int
	interval time.Duration
	// limit is the most messages it sends (0: no limit), so that against a
	// slow target the probe's messages do not outnumber the load's.
	limit int
}

// probeLimit is the most messages the probe sends beside a load of n: a
// tenth of it, at least 20.
func probeLimit(n int) int { return max(n/10, 20) }

// probePerSession is how many messages a probe session sends before it
// quits and connects again: servers limit recipients and commands per
// session (the relay: 1000 recipients), and the probe must not hit them.
const probePerSession = 50

type probeResult struct {
	latencies []time.Duration // one per message answered 250
	failures  int             // messages without a 250 (sessions that failed included)
	firstErr  error
}

// run sends until ctx ends, then lets the message in flight finish.
func (p probe) run(ctx context.Context) probeResult {
	var res probeResult
	fail := func(err error) {
		res.failures++
		if res.firstErr == nil {
			res.firstErr = err
		}
	}
	body := probeBody(p.size)
	idPrefix := time.Now().UnixNano()
	var s *probeSession
	defer func() {
		if s != nil {
			s.quit()
		}
	}()
	next := time.Now()
	for seq := 0; ; seq++ {
		if p.limit > 0 && seq >= p.limit {
			<-ctx.Done()
			return res
		}
		select {
		case <-ctx.Done():
			return res
		case <-time.After(time.Until(next)):
		}
		next = time.Now().Add(p.interval)
		if s == nil {
			var err error
			if s, err = dialProbe(p.addr); err != nil {
				fail(err)
				continue
			}
		}
		msgID := fmt.Sprintf("%d.%d@probe.relay-bench.test", idPrefix, seq)
		lat, err := s.send(msgID, p.rcpts, body)
		if err != nil {
			fail(err)
			s.close()
			s = nil
			continue
		}
		res.latencies = append(res.latencies, lat)
		if s.sent >= probePerSession {
			s.quit()
			s = nil
		}
	}
}

// probeBody is size bytes (2 when size is 1) of lines of at most 78
// characters ended by CRLF, like smtp-source's payload; no line starts
// with a dot.
func probeBody(size int) []byte {
	line := append(bytes.Repeat([]byte("X"), 78), "\r\n"...)
	var b []byte
	for left := size; left > 0; {
		n := min(left, len(line))
		if left-n == 1 {
			n-- // no 1-byte line at the end
		}
		n = max(n, 2)
		b = append(b, line[len(line)-n:]...)
		left -= n
	}
	return b
}

type probeSession struct {
	conn net.Conn
	tp   *textproto.Conn
	sent int
}

const probeTimeout = 2 * time.Minute

func dialProbe(addr string) (*probeSession, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	s := &probeSession{conn: conn, tp: textproto.NewConn(conn)}
	_ = conn.SetDeadline(time.Now().Add(probeTimeout))
	if _, _, err := s.tp.ReadResponse(220); err != nil {
		s.close()
		return nil, fmt.Errorf("probe: greeting: %w", err)
	}
	if err := s.cmd(250, "EHLO probe.relay-bench.test"); err != nil {
		s.close()
		return nil, fmt.Errorf("probe: EHLO: %w", err)
	}
	return s, nil
}

func (s *probeSession) cmd(code int, format string, args ...any) error {
	if err := s.tp.PrintfLine(format, args...); err != nil {
		return err
	}
	_, _, err := s.tp.ReadResponse(code)
	return err
}

// send sends one message and returns the time from writing its final "."
// to reading the reply.
func (s *probeSession) send(msgID string, rcpts int, body []byte) (time.Duration, error) {
	_ = s.conn.SetDeadline(time.Now().Add(probeTimeout))
	if err := s.cmd(250, "MAIL FROM:<probe@src.test>"); err != nil {
		return 0, fmt.Errorf("probe: MAIL: %w", err)
	}
	for i := 1; i <= rcpts; i++ {
		if err := s.cmd(2, "RCPT TO:<probe%d@%s>", i, sinkDomain); err != nil {
			return 0, fmt.Errorf("probe: RCPT: %w", err)
		}
	}
	if err := s.cmd(354, "DATA"); err != nil {
		return 0, fmt.Errorf("probe: DATA: %w", err)
	}
	w := s.tp.W
	fmt.Fprintf(w, "From: <probe@src.test>\r\nTo: <probe1@%s>\r\nSubject: relay-bench probe\r\nMessage-Id: <%s>\r\n\r\n", sinkDomain, msgID)
	w.Write(body)
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("probe: message body: %w", err)
	}
	start := time.Now()
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("probe: end of data: %w", err)
	}
	if _, _, err := s.tp.ReadResponse(250); err != nil {
		return 0, fmt.Errorf("probe: end of data: %w", err)
	}
	lat := time.Since(start)
	s.sent++
	return lat, nil
}

func (s *probeSession) quit() {
	_ = s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	_ = s.cmd(221, "QUIT")
	s.close()
}

func (s *probeSession) close() { s.conn.Close() }
