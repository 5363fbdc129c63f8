package integration

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// Link is a TCP proxy placed on a route between two relays, so a test can
// break the path the way networks break: cut it (new connections are
// refused and open ones severed), heal it, slow it down, drop a
// connection in the middle of DATA, or change a message in transit.
type Link struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	cut       bool
	delay     time.Duration
	dropData  int       // connections still to be dropped mid-DATA
	dropReply int       // connections still to lose the reply to their first message
	lostReply int       // connections DropAfterData severed
	rewrites  []rewrite // pending message changes, oldest first
	rewritten int
	conns     map[net.Conn]struct{}
	accepted  int
	dropped   int
	busyEvery int // every n-th connection is answered 421 4.7.0 and closed
	busy      int // connections so answered
	open      int // client connections open now
	peak      int // most of them open at once since ResetPeak
	closed    bool
	closeOnce sync.Once
}

// NewLink listens on listen (a 127.0.0.x address) and forwards to target.
func NewLink(listen, target string) (*Link, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	l := &Link{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go l.serve()
	return l, nil
}

// Addr is where the link listens.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Cut severs every open connection and refuses new ones until Heal.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
}

// Heal lets connections through again.
func (l *Link) Heal() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

// SetDelay delays every chunk forwarded in either direction by d.
func (l *Link) SetDelay(d time.Duration) {
	l.mu.Lock()
	l.delay = d
	l.mu.Unlock()
}

// DropMidData makes the next n connections die after the client has sent
// DATA and part of the message, before the end-of-data dot.
func (l *Link) DropMidData(n int) {
	l.mu.Lock()
	l.dropData = n
	l.mu.Unlock()
}

// DropAfterData makes the next n connections die just after the client
// has sent the end-of-data dot of its first message, before the server's
// reply comes back: the server has the message, the client never learns
// it (RFC 1047), so it will send the message again.
func (l *Link) DropAfterData(n int) {
	l.mu.Lock()
	l.dropReply = n
	l.mu.Unlock()
}

// RepliesDropped returns how many connections DropAfterData severed.
func (l *Link) RepliesDropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostReply
}

// Stats returns how many connections the link accepted and how many it
// dropped mid-DATA.
func (l *Link) Stats() (accepted, droppedMidData int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.dropped
}

// BusyEvery makes every n-th connection from now on get "421 4.7.0" as
// its greeting and be closed, as a server that limits connections does;
// 0 stops it.
func (l *Link) BusyEvery(n int) {
	l.mu.Lock()
	l.busyEvery = n
	l.mu.Unlock()
}

// Busy returns how many connections BusyEvery turned away.
func (l *Link) Busy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.busy
}

// Peak returns the most connections open at once through the link since
// ResetPeak (or the start), and how many are open now.
func (l *Link) Peak() (peak, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peak, l.open
}

// ResetPeak starts counting Peak afresh from the connections open now.
func (l *Link) ResetPeak() {
	l.mu.Lock()
	l.peak = l.open
	l.mu.Unlock()
}

// Close stops the link and severs its connections.
func (l *Link) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.ln.Close()
		l.Cut()
	})
}

func (l *Link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.cut || l.closed {
			l.mu.Unlock()
			c.Close() // like a firewall that resets: the client defers
			continue
		}
		l.accepted++
		if l.busyEvery > 0 && l.accepted%l.busyEvery == 0 {
			l.busy++
			l.mu.Unlock()
			c.Write([]byte("421 4.7.0 Too many connections, slow down\r\n"))
			c.Close()
			continue
		}
		drop := l.dropData > 0
		if drop {
			l.dropData--
		}
		dropReply := !drop && l.dropReply > 0
		if dropReply {
			l.dropReply--
		}
		rewriting := len(l.rewrites) > 0
		l.mu.Unlock()
		go l.pipe(c, drop, rewriting, dropReply)
	}
}

func (l *Link) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		if l.cut || l.closed {
			return false
		}
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
	return true
}

func (l *Link) pipe(client net.Conn, dropMidData, rewriting, dropReply bool) {
	server, err := net.Dial("tcp", l.target)
	if err != nil {
		client.Close()
		return
	}
	if !l.track(client, true) || !l.track(server, true) {
		client.Close()
		server.Close()
		return
	}
	l.mu.Lock()
	l.open++
	l.peak = max(l.peak, l.open)
	l.mu.Unlock()
	defer func() {
		l.track(client, false)
		l.track(server, false)
		l.mu.Lock()
		l.open--
		l.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() {
		if dropReply {
			l.copyDroppingReply(server, client)
		} else if rewriting && !dropMidData {
			l.copyRewriting(server, client)
		} else {
			l.copy(server, client, dropMidData)
		}
		done <- struct{}{}
	}()
	go func() { l.copy(client, server, false); done <- struct{}{} }()
	<-done
	client.Close()
	server.Close()
	<-done
}

// copy forwards src to dst. With dropMidData it watches the client's
// stream for "DATA\r\n", forwards half of the message data that follows
// (never its end) and then closes both ends.
func (l *Link) copy(dst, src net.Conn, dropMidData bool) {
	buf := make([]byte, 32<<10)
	var tail []byte // the last bytes seen, to find "DATA\r\n" across reads
	inData := false
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		if dropMidData && n > 0 {
			if !inData {
				look := append(tail, chunk...)
				if i := bytes.Index(look, []byte("DATA\r\n")); i >= 0 {
					inData = true
					upTo := n - (len(look) - (i + 6)) // through the DATA line
					if _, werr := dst.Write(chunk[:upTo]); werr != nil {
						return
					}
					chunk = chunk[upTo:]
				} else {
					tail = append([]byte(nil), look[max(0, len(look)-5):]...)
				}
			}
			if inData && len(chunk) > 0 {
				dst.Write(chunk[:len(chunk)/2])
				l.mu.Lock()
				l.dropped++
				l.mu.Unlock()
				return
			}
		}
		if len(chunk) > 0 {
			l.mu.Lock()
			d := l.delay
			l.mu.Unlock()
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyDroppingReply forwards the client's stream src to dst until the
// end-of-data dot of the first message has gone through, then closes src
// at once, before the server's reply can be passed back.
func (l *Link) copyDroppingReply(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	var look []byte // the last bytes seen, to find markers across reads
	inData := false
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		for len(chunk) > 0 {
			look = append(look, chunk...)
			marker := []byte("DATA\r\n")
			if inData {
				marker = []byte("\r\n.\r\n")
			}
			i := bytes.Index(look, marker)
			if i < 0 {
				if !l.forward(dst, chunk) {
					return
				}
				look = append([]byte(nil), look[max(0, len(look)-len(marker)+1):]...)
				break
			}
			upTo := len(chunk) - (len(look) - (i + len(marker))) // through the marker, within chunk
			if !l.forward(dst, chunk[:upTo]) {
				return
			}
			if inData {
				src.Close()
				l.mu.Lock()
				l.lostReply++
				l.mu.Unlock()
				return
			}
			chunk, look, inData = chunk[upTo:], nil, true
		}
		if err != nil {
			return
		}
	}
}

// rewrite is one change RewriteData asked for.
type rewrite struct{ old, new []byte }

// RewriteData makes the link change the next message that contains old,
// as a broken or hostile hop would: in the message data the client sends
// (after DATA, before the final dot, as on the wire: dot-stuffed, CRLF)
// the first occurrence of old becomes new. Messages without old pass
// unchanged. Each call changes one message; connections opened before
// the first call are not watched.
func (l *Link) RewriteData(old, new string) {
	l.mu.Lock()
	l.rewrites = append(l.rewrites, rewrite{old: []byte(old), new: []byte(new)})
	l.mu.Unlock()
}

// Rewritten returns how many messages the link has changed.
func (l *Link) Rewritten() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rewritten
}

// copyRewriting forwards the client's stream src to dst like copy, but
// holds each message's data, from "DATA\r\n" to the end-of-data dot, until
// it is complete, so that a pending rewrite sees the message whole
// whatever the TCP segments. Commands pass at once.
func (l *Link) copyRewriting(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	var tail []byte // the last bytes of commands, to find "DATA\r\n" across reads
	var data []byte // the message being held
	inData := false
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		for len(chunk) > 0 {
			if !inData {
				look := append(tail, chunk...)
				i := bytes.Index(look, []byte("DATA\r\n"))
				if i < 0 {
					if !l.forward(dst, chunk) {
						return
					}
					tail = append([]byte(nil), look[max(0, len(look)-5):]...)
					break
				}
				upTo := i + 6 - len(tail) // through the DATA line, within chunk
				if !l.forward(dst, chunk[:upTo]) {
					return
				}
				chunk, tail, inData, data = chunk[upTo:], nil, true, data[:0]
				continue
			}
			data = append(data, chunk...)
			end := dataEnd(data)
			if end < 0 {
				break // wait for the rest of the message
			}
			if !l.forward(dst, l.rewriteMessage(data[:end])) {
				return
			}
			chunk, inData = append([]byte(nil), data[end:]...), false
		}
		if err != nil {
			return
		}
	}
}

// dataEnd returns the offset just past the end-of-data line ".\r\n" in
// message data, or -1 when it has not arrived yet.
func dataEnd(data []byte) int {
	if bytes.HasPrefix(data, []byte(".\r\n")) {
		return 3
	}
	if i := bytes.Index(data, []byte("\r\n.\r\n")); i >= 0 {
		return i + 5
	}
	return -1
}

// rewriteMessage applies the oldest pending rewrite whose text occurs in
// msg, once, and returns msg as it is to be sent on.
func (l *Link) rewriteMessage(msg []byte) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.rewrites {
		if bytes.Contains(msg, r.old) {
			l.rewrites = append(l.rewrites[:i:i], l.rewrites[i+1:]...)
			l.rewritten++
			return bytes.Replace(msg, r.old, r.new, 1)
		}
	}
	return msg
}

// forward writes p to dst after the link's delay; false when dst is gone.
func (l *Link) forward(dst net.Conn, p []byte) bool {
	l.mu.Lock()
	d := l.delay
	l.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
	_, err := dst.Write(p)
	return err == nil
}
