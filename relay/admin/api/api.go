// Package api is the wire format of the relay daemon's admin socket:
// HTTP with JSON bodies on a unix socket (docs/design.md §11, §13). The daemon's
// server (package relay/admin) and the operators' client (package client)
// share these types; the package imports nothing of the relay so that the
// client does not pull in the daemon.
//
// Endpoints, all under Version:
//
//	GET  /v1/messages                 []Message: the queue, oldest first; filters as query
//	                                  parameters: from, to, status, older_than, hop (see Filter)
//	GET  /v1/messages/{id}            Message with headers, schedule and events; a queued
//	                                  message or one retired within the history window;
//	                                  id may be a unique prefix
//	POST /v1/messages/{id}/{action}   Change; action is hold, release, retry, delete or bounce
//	POST /v1/retry                    []Change: retry every queued message that is not held
//	GET  /v1/stats                    Stats
//	GET  /v1/shape                    Shape: recipients to deliver by destination and age
//	                                  (Postfix's qshape); by=domain|hop, held=true (see ShapeQuery)
//	POST /v1/transfer?to=HOST:PORT&id=ID...|all=true
//	                                  []Change: hand the messages to the relay at to and
//	                                  retire them here ("transferred" event)
//	POST /v1/drain[?to=HOST:PORT]      Drain: accept no more mail, transfer (to) or deliver
//	                                  the queue, exit when it is empty
//	DELETE /v1/bans/{address}         Unban: lift the login ban of a client address and
//	                                  forget its failed logins (`relay user unban`)
//	GET  /metrics                     Prometheus text format (also on [admin] metrics_listen)
//
// Errors are an HTTP status with an Error body: 404 for an unknown
// message, 409 for an ambiguous prefix or an action the message's state
// forbids (retry while held), 400 for a bad request, 500 otherwise.
package api

import (
	"fmt"
	"net/url"
	"time"
)

// Version prefixes every path but /metrics.
const Version = "/v1"

// Recipient states, as in the spool.
const (
	StatusPending   = "pending"
	StatusDeferred  = "deferred"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// Message states.
const (
	StateQueued  = "queued"
	StateRetired = "retired" // delivered, bounced or deleted; kept for the history window
)

// Actions of POST /v1/messages/{id}/{action}.
const (
	ActionHold    = "hold"
	ActionRelease = "release"
	ActionRetry   = "retry"
	ActionDelete  = "delete"
	ActionBounce  = "bounce"
	// ActionTransfer is the action of the Changes POST /v1/transfer
	// answers with.
	ActionTransfer = "transfer"
)

// Message is one message. The list shows the envelope and recipients;
// show adds Headers, each recipient's Schedule, and Events. Addresses are
// written without angle brackets, as Postfix's `postqueue -j` does: the
// null reverse path is "", a source route stays ("@b.test:u@c.test").
type Message struct {
	ID      string    `json:"id"`
	From    string    `json:"from"`
	Created time.Time `json:"created"` // when this relay accepted it
	Held    bool      `json:"held"`
	Size    int64     `json:"size"` // body bytes, as stored
	State   string    `json:"state"`
	// Retired is when the message left the queue; null while queued.
	Retired    *time.Time `json:"retired"`
	Client     string     `json:"client,omitempty"`      // client IP address
	Helo       string     `json:"helo,omitempty"`        // its EHLO/HELO name
	AuthUser   string     `json:"auth_user,omitempty"`   // SMTP AUTH user
	MailParams string     `json:"mail_params,omitempty"` // ESMTP MAIL parameters, wire form
	Hops       int        `json:"hops"`                  // Received headers at acceptance
	// Levels of service, from MailParams. Priority is the MT-PRIORITY
	// (RFC 6710) the scheduler honours, -9..9, 0 when none. DeliverBy is
	// the BY deadline (RFC 2852: acceptance plus the by-time), null
	// without BY; ByMode is then "R" (return the message at the
	// deadline) or "N" (notify, keep trying). RequireTLS is REQUIRETLS
	// (RFC 8689): relayed only over verified TLS.
	Priority   int         `json:"priority"`
	DeliverBy  *time.Time  `json:"deliver_by"`
	ByMode     string      `json:"by_mode,omitempty"`
	RequireTLS bool        `json:"require_tls"`
	Recipients []Recipient `json:"recipients"`
	// Headers is the header section, CRLF line endings (show, queued
	// messages only: the body is not kept after retiring).
	Headers string  `json:"headers,omitempty"`
	Events  []Event `json:"events,omitempty"` // show only; oldest first
}

// Recipient is one forward path of a message and its delivery state.
type Recipient struct {
	Index    int    `json:"index"`
	Address  string `json:"address"`
	Params   string `json:"params,omitempty"` // ESMTP RCPT parameters (NOTIFY, ORCPT), wire form
	Status   string `json:"status"`           // pending | deferred | delivered | failed
	Attempts int    `json:"attempts"`
	// NextAttempt is when the next delivery attempt is due; null for a
	// final recipient and while the message is held.
	NextAttempt *time.Time `json:"next_attempt"`
	LastReply   string     `json:"last_reply"` // the last remote reply or local error
	// NextHop names the lane the recipient is delivered through
	// ("local", "smtp:127.0.0.3:2525", "mx:example.org:25"); empty for a
	// final recipient.
	NextHop string `json:"next_hop,omitempty"`
	// Schedule (show) is NextAttempt and the attempts after it if each
	// one is deferred, by the retry policy without its ±10% jitter, up to
	// the one at the end of the queue lifetime.
	Schedule []time.Time `json:"schedule,omitempty"`
}

// Event is one entry of a message's history.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // received, delivered, deferred, failed, held, released, retried, deleted, bounced
	// Recipient is the address the event is about; "" for the message.
	Recipient string `json:"recipient,omitempty"`
	Text      string `json:"text"`
}

// Change is the answer to an action: what it changed.
type Change struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	// Recipients is how many recipients the action changed: unscheduled
	// (hold), made due (release, retry), failed (bounce) or dropped
	// (delete). 0 means nothing changed; Result says why.
	Recipients int    `json:"recipients"`
	Result     string `json:"result"` // one line for people
}

// Drain answers POST /v1/drain: the node accepts no more mail and exits
// once its queue is empty (design §18).
type Drain struct {
	// To is where the queue goes ("host:port"); "" : delivered as usual.
	To     string `json:"to,omitempty"`
	Queued int    `json:"queued"` // messages in the queue when asked
	Held   int    `json:"held"`   // of which held
	Result string `json:"result"` // one line for people
}

// Stats describes the queue as a whole.
type Stats struct {
	Messages int `json:"messages"` // queued messages
	Held     int `json:"held"`     // of which held
	// Recipients counts the queued messages' recipients by status
	// (pending, deferred, and the final ones of partly delivered
	// messages); every status is present.
	Recipients map[string]int `json:"recipients"`
	// ByHop counts recipients still to be delivered by next hop.
	ByHop map[string]int `json:"by_hop"`
	// Hops is the traffic shaping of the next hops with a lane now (mail
	// queued for them, sessions open, or throttling not yet restored).
	Hops []HopShaping `json:"hops"`
	// Oldest is the oldest queued message; null when the queue is empty.
	Oldest     *Oldest `json:"oldest"`
	SpoolBytes int64   `json:"spool_bytes"` // disk used by the spool
	// Webhooks are the [[webhook]] backlogs, in configuration order;
	// empty without webhooks.
	Webhooks []Webhook `json:"webhooks"`
}

// Webhook describes one [[webhook]]: the events waiting to be posted and
// the state of its poster.
type Webhook struct {
	Name    string `json:"name"`
	URL     string `json:"url"`
	Backlog int    `json:"backlog"` // events not yet posted
	// OldestAgeSeconds is the age of the oldest waiting event; 0 when none.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	Posted           uint64  `json:"posted"` // events posted since the daemon started
	// Failures counts failed rounds since the last success; LastError is
	// the last failure and NextAttempt, while the webhook waits, when it
	// tries again.
	Failures    int        `json:"failures"`
	LastError   string     `json:"last_error,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
}

// ShapeBuckets are the age buckets of Shape, by the age of the message:
// 0-5m, 5-10m, ..., 160-320m, and 320m+ (the last one unbounded).
var ShapeBuckets = []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute,
	80 * time.Minute, 160 * time.Minute, 320 * time.Minute}

// ShapeBy values: group by the destination domain of each recipient (the
// first hop of a source route, else the mailbox's domain), or by the
// next hop the relay delivers it through.
const (
	ShapeByDomain = "domain"
	ShapeByHop    = "hop"
)

// Shape is the queue's shape, as Postfix's qshape prints it: the
// recipients still to deliver (pending or deferred), by destination and by
// the age of their message.
type Shape struct {
	By      string   `json:"by"`      // domain or hop
	Held    bool     `json:"held"`    // whether held messages are counted
	Buckets []string `json:"buckets"` // labels: "0-5m", ..., "320m+"
	Total   ShapeRow `json:"total"`   // every destination together
	// Rows are the destinations, the most recipients first (then by name).
	Rows []ShapeRow `json:"rows"`
}

// ShapeRow is one destination of a Shape.
type ShapeRow struct {
	Destination string `json:"destination"`
	Total       int    `json:"total"`
	Counts      []int  `json:"counts"` // one per bucket
}

// ShapeQuery encodes the parameters of GET /v1/shape.
func ShapeQuery(by string, held bool) url.Values {
	v := url.Values{}
	if by != "" {
		v.Set("by", by)
	}
	if held {
		v.Set("held", "true")
	}
	return v
}

// ShapeLabels returns the labels of ShapeBuckets: "0-5m", ..., "320m+".
func ShapeLabels() []string {
	var out []string
	lo := 0
	for _, b := range ShapeBuckets {
		hi := int(b / time.Minute)
		out = append(out, fmt.Sprintf("%d-%dm", lo, hi))
		lo = hi
	}
	return append(out, fmt.Sprintf("%dm+", lo))
}

// HopShaping is the traffic shaping state of one next hop.
type HopShaping struct {
	Hop          string `json:"hop"`
	Sessions     int    `json:"sessions"`      // open or opening
	Queued       int    `json:"queued"`        // jobs waiting in its lane
	SessionLimit int    `json:"session_limit"` // sessions allowed now
	Concurrency  int    `json:"concurrency"`   // per_hop_concurrency
	// Rate is the message rate allowed now, ConfiguredRate the
	// configured one ("20/s"); "": no limit.
	Rate           string `json:"rate"`
	ConfiguredRate string `json:"configured_rate"`
	// ThrottleLevel is how far the hop is throttled after 421 or 4.7.x
	// replies (each level halves sessions and rate; 0: not), Throttled
	// how many such replies it gave.
	ThrottleLevel int `json:"throttle_level"`
	Throttled     int `json:"throttled"`
}

// Unban is the answer to DELETE /v1/bans/{address}.
type Unban struct {
	Address string `json:"address"` // the client address, normalised
	// Forgotten is true when the address was banned or had failed logins
	// to forget; false when there was nothing (the answer is still OK).
	Forgotten bool `json:"forgotten"`
}

// Oldest names the oldest queued message.
type Oldest struct {
	ID         string    `json:"id"`
	Created    time.Time `json:"created"`
	AgeSeconds float64   `json:"age_seconds"`
}

// Filter selects messages for the list. Zero fields select everything.
type Filter struct {
	From      string        // substring of the sender address, any case
	To        string        // substring of any recipient address, any case
	Status    string        // a recipient in this status, or "held" for held messages
	OlderThan time.Duration // accepted at least this long ago
	Hop       string        // substring of the next hop of a recipient still to be delivered
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Query encodes f as the query parameters of GET /v1/messages.
func (f Filter) Query() url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("from", f.From)
	set("to", f.To)
	set("status", f.Status)
	set("hop", f.Hop)
	if f.OlderThan > 0 {
		v.Set("older_than", f.OlderThan.String())
	}
	return v
}

// ParseFilter decodes the query parameters of GET /v1/messages.
func ParseFilter(v url.Values) (Filter, error) {
	f := Filter{From: v.Get("from"), To: v.Get("to"), Status: v.Get("status"), Hop: v.Get("hop")}
	switch f.Status {
	case "", StatusPending, StatusDeferred, StatusDelivered, StatusFailed, "held":
	default:
		return Filter{}, fmt.Errorf("status %q: want pending, deferred, delivered, failed or held", f.Status)
	}
	if s := v.Get("older_than"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return Filter{}, fmt.Errorf("older_than %q: want a duration such as 90s, 30m or 2h", s)
		}
		f.OlderThan = d
	}
	return f, nil
}
