package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Records are encoded in a small binary format (see doc.go): one format
// version byte, then fields in a fixed order as varints and
// length-prefixed strings. Decoders ignore trailing bytes so fields can be
// appended later without a version bump; decoders of a newer version read
// such optional fields only when bytes remain.

const recordV1 = 1

var errCorrupt = errors.New("corrupt record")

type encoder struct{ b []byte }

func newEncoder(sizeHint int) *encoder {
	e := &encoder{b: make([]byte, 0, sizeHint)}
	e.b = append(e.b, recordV1)
	return e
}

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// time encodes t as Unix nanoseconds; the zero Time is 0.
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.varint(0)
		return
	}
	e.varint(t.UnixNano())
}

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

type decoder struct {
	b   []byte
	err error
}

func newDecoder(b []byte) *decoder {
	d := &decoder{b: b}
	if len(b) == 0 {
		d.err = fmt.Errorf("%w: empty", errCorrupt)
		return d
	}
	if b[0] != recordV1 {
		d.err = fmt.Errorf("%w: unknown record version %d", errCorrupt, b[0])
		return d
	}
	d.b = b[1:]
	return d
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errCorrupt, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n]) // copies: badger values are only valid inside the txn
	d.b = d.b[n:]
	return s
}

func (d *decoder) time(what string) time.Time {
	n := d.varint(what)
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (d *decoder) bool(what string) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail(what)
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// msgRecord is the value of m/<id>.
type msgRecord struct {
	Envelope
	Size      int64
	NRcpt     int
	ChunkSize int // body chunk size used for this message's b/ keys
	// ExtraEvents: an operator action wrote events besides "received"
	// (appended field), so retiring must look for e/ keys even when no
	// recipient was ever attempted.
	ExtraEvents bool
	// InlineReceived: the "received" event is not stored under e/ but
	// made from this record (receivedEvent); true for every message
	// stored since (appended field). Older records have it under e/.
	InlineReceived bool
	// BodyFile: the body is a file under bodies/ (appended field; see
	// body.go), with its first HeadSize bytes under b/<id>/0.
	BodyFile bool
	HeadSize int64
}

func encodeMessage(m *msgRecord) []byte {
	e := newEncoder(64 + len(m.From) + len(m.MailParams) + len(m.Client) + len(m.Helo) + len(m.AuthUser) + len(m.Handoff))
	e.str(m.From)
	e.str(m.MailParams)
	e.time(m.Received)
	e.str(m.Client)
	e.str(m.Helo)
	e.str(m.AuthUser)
	e.varint(int64(m.Hops))
	e.bool(m.Held)
	e.uvarint(uint64(m.Size))
	e.uvarint(uint64(m.NRcpt))
	e.uvarint(uint64(m.ChunkSize))
	e.bool(m.ExtraEvents)    // appended fields: absent in older records
	e.bool(m.InlineReceived) //
	if m.BodyFile || m.Priority != 0 || m.Handoff != "" {
		e.bool(m.BodyFile)
		e.uvarint(uint64(m.HeadSize))
	}
	if m.Priority != 0 || m.Handoff != "" {
		e.varint(int64(m.Priority)) // appended field: absent means 0
	}
	if m.Handoff != "" {
		e.str(m.Handoff) // appended field: absent means ""
	}
	return e.b
}

func decodeMessage(b []byte) (*msgRecord, error) {
	d := newDecoder(b)
	m := &msgRecord{}
	m.From = d.str("from")
	m.MailParams = d.str("mail params")
	m.Received = d.time("received")
	m.Client = d.str("client")
	m.Helo = d.str("helo")
	m.AuthUser = d.str("auth user")
	m.Hops = int(d.varint("hops"))
	m.Held = d.bool("held")
	size := d.uvarint("size")
	nrcpt := d.uvarint("recipient count")
	chunk := d.uvarint("chunk size")
	if d.err == nil && len(d.b) > 0 {
		m.ExtraEvents = d.bool("extra events")
	}
	if d.err == nil && len(d.b) > 0 {
		m.InlineReceived = d.bool("inline received")
	}
	if d.err == nil && len(d.b) > 0 {
		m.BodyFile = d.bool("body file")
		m.HeadSize = int64(d.uvarint("head size"))
	}
	if d.err == nil && len(d.b) > 0 {
		p := d.varint("priority")
		if p < -9 || p > 9 {
			return nil, fmt.Errorf("%w: priority %d", errCorrupt, p)
		}
		m.Priority = int8(p)
	}
	if d.err == nil && len(d.b) > 0 {
		m.Handoff = d.str("handoff")
	}
	if d.err != nil {
		return nil, d.err
	}
	if size > 1<<50 || nrcpt > 1<<31 || chunk > 1<<31 || (size > 0 && chunk == 0) || m.HeadSize < 0 || m.HeadSize > int64(size) {
		return nil, fmt.Errorf("%w: implausible sizes", errCorrupt)
	}
	m.Size, m.NRcpt, m.ChunkSize = int64(size), int(nrcpt), int(chunk)
	return m, nil
}

// Status codes on disk. The Status strings are the API; these bytes are
// the storage form and must never be renumbered.
var statusCodes = [...]Status{StatusPending, StatusDeferred, StatusDelivered, StatusFailed}

func statusCode(s Status) (uint64, error) {
	for i, v := range statusCodes {
		if v == s {
			return uint64(i), nil
		}
	}
	return 0, fmt.Errorf("unknown recipient status %q", s)
}

func encodeRcpt(r *Recipient) ([]byte, error) {
	code, err := statusCode(r.Status)
	if err != nil {
		return nil, err
	}
	e := newEncoder(32 + len(r.To) + len(r.Params) + len(r.LastReply))
	e.str(r.To)
	e.str(r.Params)
	e.uvarint(code)
	e.varint(int64(r.Attempts))
	e.str(r.LastReply)
	e.time(r.NextAttempt)
	e.bool(r.DelayWarned) // appended field: absent in older records
	if r.Expanded {
		e.bool(true) // appended field, only when set
	}
	return e.b, nil
}

func decodeRcpt(b []byte) (Recipient, error) {
	d := newDecoder(b)
	var r Recipient
	r.To = d.str("to")
	r.Params = d.str("rcpt params")
	code := d.uvarint("status")
	r.Attempts = int(d.varint("attempts"))
	r.LastReply = d.str("last reply")
	r.NextAttempt = d.time("next attempt")
	if d.err == nil && len(d.b) > 0 {
		r.DelayWarned = d.bool("delay warned")
	}
	if d.err == nil && len(d.b) > 0 {
		r.Expanded = d.bool("expanded")
	}
	if d.err != nil {
		return Recipient{}, d.err
	}
	if code >= uint64(len(statusCodes)) {
		return Recipient{}, fmt.Errorf("%w: status code %d", errCorrupt, code)
	}
	r.Status = statusCodes[code]
	return r, nil
}

func encodeEvent(ev *Event) []byte {
	e := newEncoder(24 + len(ev.Kind) + len(ev.Text))
	e.time(ev.At)
	e.str(ev.Kind)
	e.varint(int64(ev.Rcpt))
	e.str(ev.Text)
	return e.b
}

func decodeEvent(b []byte) (Event, error) {
	d := newDecoder(b)
	var ev Event
	ev.At = d.time("time")
	ev.Kind = d.str("kind")
	ev.Rcpt = int(d.varint("recipient"))
	ev.Text = d.str("text")
	return ev, d.err
}
