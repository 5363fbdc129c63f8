package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tools are the paths of Postfix's load generator and sink.
type tools struct {
	source, sink string
}

func findTools() (tools, error) {
	t := tools{source: "/usr/sbin/smtp-source", sink: "/usr/sbin/smtp-sink"}
	for _, p := range []string{t.source, t.sink} {
		if _, err := os.Stat(p); err != nil {
			return t, fmt.Errorf("%s not found: apt-get install postfix", p)
		}
	}
	return t, nil
}

// Envelope used by smtp-source; smtp-source -r N sends to 1u@sink.test … Nu@sink.test.
const (
	sourceFrom = "a@src.test"
	sourceTo   = "u@sink.test"
	sinkDomain = "sink.test"
)

// runSource runs smtp-source against addr with the load of c, sending n
// messages, and returns once it exits: every message had its reply. It
// returns what smtp-source printed, if anything (warnings).
func runSource(ctx context.Context, bin, addr string, c config, n int, reuse bool) (string, error) {
	args := []string{
		"-s", strconv.Itoa(c.sessions), "-l", strconv.Itoa(c.size), "-m", strconv.Itoa(n),
		"-r", strconv.Itoa(c.rcpts), "-f", sourceFrom, "-t", sourceTo,
	}
	if reuse {
		args = append([]string{"-d"}, args...)
	}
	args = append(args, addr)
	cmd := exec.CommandContext(ctx, bin, args...)
	out := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("smtp-source %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out.String(), nil
}

// sink is a running smtp-sink -c. Its counters arrive on stdout as records
// "sess=N quit=N mesg=N" separated by \r; the last mesg= is the number of
// messages it has received (counted at the end of DATA).
type sink struct {
	addr   string
	cmd    *exec.Cmd
	count  atomic.Int64
	eof    chan struct{} // closed when stdout ends: the sink exited
	stderr *tailBuffer
}

// startSink starts smtp-sink -c on addr, in g.
func startSink(ctx context.Context, bin, addr string, g *group) (*sink, error) {
	args := []string{"-c"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // smtp-sink refuses to run as root
	}
	args = append(args, addr, "1000")
	s := &sink{addr: addr, cmd: exec.Command(bin, args...), eof: make(chan struct{}), stderr: &tailBuffer{}}
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := g.start(s.cmd); err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	go s.read(stdout)
	if err := waitListening(ctx, addr, 10*time.Second, s.eof); err != nil {
		s.stop()
		return nil, fmt.Errorf("smtp-sink %s: %w: %s", strings.Join(args, " "), err, s.stderr)
	}
	return s, nil
}

func (s *sink) read(r io.Reader) {
	defer close(s.eof)
	sc := bufio.NewScanner(r)
	sc.Split(splitRecords)
	for sc.Scan() {
		if n, ok := parseMesg(sc.Text()); ok {
			s.count.Store(int64(n))
		}
	}
}

// waitCount waits until the sink has counted want messages, or until the
// deadline, or until died is closed (the server that forwards to the sink
// exited).
func (s *sink) waitCount(ctx context.Context, want int, deadline time.Time, died <-chan struct{}) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for s.count.Load() < int64(want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: the sink counted %d of %d messages", s.count.Load(), want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.eof:
			return fmt.Errorf("smtp-sink exited after counting %d of %d messages: %s", s.count.Load(), want, s.stderr)
		case <-died:
			return fmt.Errorf("the target exited; the sink counted %d of %d messages", s.count.Load(), want)
		case <-tick.C:
		}
	}
	return nil
}

func (s *sink) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.eof:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.eof
	}
	_ = s.cmd.Wait()
}

// splitRecords is a bufio.SplitFunc for records ended by \r or \n.
func splitRecords(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// parseMesg finds mesg=N in one smtp-sink counter record.
func parseMesg(record string) (int, bool) {
	for _, f := range strings.Fields(record) {
		if v, ok := strings.CutPrefix(f, "mesg="); ok {
			n, err := strconv.Atoi(v)
			return n, err == nil
		}
	}
	return 0, false
}

// listening reports whether something accepts connections on addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitListening waits until addr accepts connections, or until exited is
// closed (the server died), or for at most timeout.
func waitListening(ctx context.Context, addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for !listening(addr) {
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s", addr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the server exited before listening on " + addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// tailBuffer keeps the last 2 KiB written to it: the end of a tool's
// complaints, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailMax = 2 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(strings.Fields(strings.ReplaceAll(string(t.b), "\r", " ")), " ")
}
