package accept

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

type readerSession struct{ r *Reader }

func (s readerSession) WakeIfIdle() { s.r.WakeIfIdle() }
func (s readerSession) Abort()      { s.r.Conn.Close() }

func newPipeReader(t *testing.T, g *Group) (*Reader, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	return &Reader{Conn: server, Src: server, Group: g, Timeout: time.Hour}, client
}

// Each read gets its own deadline, and never one past Limit: a client
// that trickles bytes cannot outlast the session's limit.
func TestReaderDeadlines(t *testing.T) {
	var g Group
	r, client := newPipeReader(t, &g)
	r.Timeout = 50 * time.Millisecond
	go client.Write([]byte("a"))
	if _, err := r.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read with data waiting: %v", err)
	}
	start := time.Now()
	_, err := r.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || r.Stopped(err) {
		t.Fatalf("silent peer: %v (stopped %v), want a timeout that is not a stop", err, r.Stopped(err))
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("timed out after %v, want about 50ms", d)
	}
	r.Timeout, r.Limit = time.Hour, time.Now().Add(50*time.Millisecond)
	start = time.Now()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past Limit: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Limit ignored: the read lasted %v", d)
	}
}

// Shutdown ends a read that waits for a command, and a session that goes
// back to waiting after the group stopped does not wait at all; a read
// in the middle of a command is left to finish.
func TestReaderStopsIdleReads(t *testing.T) {
	var g Group
	r, client := newPipeReader(t, &g)
	defer g.Add(readerSession{r})()
	r.Idle.Store(true)
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // the read is waiting
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go g.Shutdown(ctx)
	select {
	case err := <-errc:
		if !r.Stopped(err) {
			t.Fatalf("idle read ended with %v, not as stopped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not end the idle read")
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrStopping) {
		t.Fatalf("idle read after Shutdown: %v, want ErrStopping", err)
	}
	r.Idle.Store(false)
	go client.Write([]byte("x"))
	if _, err := r.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read in the middle of a command after Shutdown: %v", err)
	}
}
