package spool

import "sync"

// freshCache remembers, for messages no transaction has touched since
// their Enqueue, the message as stored and its body. Under load the
// scheduler reads a message (Get) and its delivery reads the body (Body)
// within milliseconds of the Enqueue; served from here, neither reads it
// back from Badger.
//
// An entry never differs from what Badger holds: it is reserved before
// the enqueue commits, published after, and dropped when a transaction
// that changes the message (Record, an operator action) begins, so a
// publish that comes after such a drop finds no reservation and does
// nothing. It is bounded in bytes and forgets its oldest entries first.
type freshCache struct {
	mu    sync.Mutex
	max   int // bytes; 0 or less turns the cache off
	bytes int
	m     map[string]*freshEntry
	order []string // IDs in reservation order; may name dropped entries
	head  int      // order[:head] were evicted or dropped
}

type freshEntry struct {
	msg  *Message // nil until published
	body []byte   // nil for a filed body, which is read from its file
	size int
}

// defaultFreshBytes holds a few seconds of mail at thousands of messages
// a second, which is all the head-of-queue needs.
const defaultFreshBytes = 16 << 20

func newFreshCache(max int) *freshCache {
	return &freshCache{max: max, m: make(map[string]*freshEntry)}
}

// reserve announces that id is about to be committed.
func (c *freshCache) reserve(id string) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Most entries are dropped, not evicted: forget their IDs in order
	// once they outnumber the live ones.
	if n := len(c.order) - c.head; n > 64 && n > 2*len(c.m) {
		kept := c.order[:0]
		for _, old := range c.order[c.head:] {
			if c.m[old] != nil {
				kept = append(kept, old)
			}
		}
		clear(c.order[len(kept):])
		c.order, c.head = kept, 0
	}
	c.m[id] = &freshEntry{}
	c.order = append(c.order, id)
}

// publish makes the committed message m and its body available, unless a
// transaction touched it since reserve. The cache keeps body: the caller
// must not change it afterwards.
func (c *freshCache) publish(m *Message, ct content) {
	if c.max <= 0 {
		return
	}
	body := ct.body
	if ct.file {
		body = nil
	}
	size := len(body) + 256
	for i := range m.Recipients {
		size += 64 + len(m.Recipients[i].To) + len(m.Recipients[i].Params)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[m.ID]
	if e == nil || e.msg != nil {
		return
	}
	if body == nil && !ct.file {
		body = []byte{} // as read back from Badger
	}
	// A full slice expression: a caller appending to the body it got
	// from Body reallocates instead of writing into the cached array.
	e.msg, e.body, e.size = m, body[:len(body):len(body)], size
	c.bytes += size
	for c.bytes > c.max && c.head < len(c.order) {
		c.dropLocked(c.order[c.head])
		c.order[c.head] = ""
		c.head++
	}
}

// drop forgets id; every transaction that changes a message calls it
// before it begins.
func (c *freshCache) drop(id string) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	c.dropLocked(id)
	c.mu.Unlock()
}

func (c *freshCache) dropLocked(id string) {
	if e := c.m[id]; e != nil {
		c.bytes -= e.size
		delete(c.m, id)
	}
}

// get returns the published entry of id. What it returns is never
// changed after publication, so callers may read it without the lock.
func (c *freshCache) get(id string) (*Message, []byte, bool) {
	if c.max <= 0 {
		return nil, nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[id]
	if e == nil || e.msg == nil {
		return nil, nil, false
	}
	return e.msg, e.body, true
}

// message returns a copy of the cached message, which the caller may
// change.
func (c *freshCache) message(id string) (*Message, bool) {
	cached, _, ok := c.get(id)
	if !ok {
		return nil, false
	}
	m := *cached
	m.Recipients = append([]Recipient(nil), cached.Recipients...)
	return &m, true
}

// body returns the cached body, shared: the caller must not change it.
// A filed body is not cached.
func (c *freshCache) body(id string) ([]byte, bool) {
	_, body, ok := c.get(id)
	return body, ok && body != nil
}
