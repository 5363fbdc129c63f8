// Package admin is the relay daemon's operator interface: the HTTP+JSON
// API on the admin unix socket (wire format in package api) through which
// `relay queue` lists, shows, holds, releases, retries, deletes and
// bounces queued messages, and the Prometheus metrics. Only the daemon
// opens the spool, so this is the one way operators' commands reach it.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/queue/ratelimit"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/spool"
)

// Queue is what the admin API needs of the delivery queue.
type Queue interface {
	// Bounce fails the open recipients of a message now, with the DSN
	// they owe.
	Bounce(id string) (int, error)
	// Notify wakes the scheduler after work was made due.
	Notify()
	// Revive forgets next hops marked down, so work made due by an
	// operator is attempted at once.
	Revive()
	// Hops is the traffic shaping state of the busy next hops.
	Hops() []queue.HopState
}

// Options configure a Server.
type Options struct {
	Spool *spool.Spool
	Queue Queue
	// NextHop names the lane a forward path (wire form) is delivered
	// through; nil: next hops are not shown.
	NextHop func(to string) string
	// Retry is the queue's retry policy, for the schedule `show` prints.
	Retry queue.RetryPolicy
	// Unban lifts the login ban of a client address and forgets its
	// failed logins, reporting whether there was anything to forget; nil:
	// DELETE /v1/bans answers 501.
	Unban func(netip.Addr) bool
	// Metrics is served at /metrics on the socket too; nil: not served.
	Metrics http.Handler
	// Webhooks reports the webhooks' backlogs for stats; nil: none.
	Webhooks func() ([]api.Webhook, error)
	// Transfer hands messages (all queued ones with all) to the relay at
	// to, "host:port"; nil: POST /v1/transfer answers 501.
	Transfer func(ctx context.Context, to string, ids []string, all bool) ([]api.Change, error)
	// Drain makes the daemon accept no more mail and exit once its queue
	// is transferred to to ("host:port") or, with "", delivered; nil:
	// POST /v1/drain answers 501.
	Drain  func(to string) (*api.Drain, error)
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
}

// scheduleLen is how many attempt times `show` lists per recipient.
const scheduleLen = 5

// maxHeaders bounds the header section `show` returns.
const maxHeaders = 64 << 10

// Server serves the admin API.
type Server struct {
	o    Options
	mux  *http.ServeMux
	http *http.Server
}

// New returns a Server; Serve starts it.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET "+api.Version+"/messages", s.list)
	s.mux.HandleFunc("GET "+api.Version+"/messages/{id}", s.show)
	s.mux.HandleFunc("POST "+api.Version+"/messages/{id}/{action}", s.act)
	s.mux.HandleFunc("POST "+api.Version+"/retry", s.retryAll)
	s.mux.HandleFunc("GET "+api.Version+"/stats", s.stats)
	s.mux.HandleFunc("GET "+api.Version+"/shape", s.shape)
	s.mux.HandleFunc("DELETE "+api.Version+"/bans/{address}", s.unban)
	s.mux.HandleFunc("POST "+api.Version+"/transfer", s.transfer)
	s.mux.HandleFunc("POST "+api.Version+"/drain", s.drain)
	if o.Metrics != nil {
		s.mux.Handle("GET /metrics", o.Metrics)
	}
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)}
	return s
}

// Handler returns the API's HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers requests on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, letting requests in progress finish until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Listen creates the admin socket at path, mode 0600 from the moment it
// appears: it is bound in a fresh private directory, made 0600 there and
// renamed into place, so there is no instant at which another user could
// connect. A socket left behind by a daemon that died is replaced; one a
// running daemon answers on is an error. Closing the listener removes the
// socket.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: %s: another daemon is answering on this socket", path)
		}
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".admin")
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the socket moves; socketListener removes it
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: listen %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: listen %s: %w", path, err)
	}
	return &socketListener{UnixListener: ul, path: path}, nil
}

// socketListener removes the socket file when first closed. Only the
// first Close: http.Server.Serve closes its listener again when it
// returns, and by then the path may belong to a newer socket (a daemon
// restarted in its place) that a second remove would take away.
type socketListener struct {
	*net.UnixListener
	path string
	once sync.Once
	err  error
}

func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && l.err == nil {
			l.err = rerr
		}
	})
	return l.err
}

// --- handlers ---

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	now := s.o.Now()
	// Streamed, so a long queue is never held in memory as one answer.
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, "[")
	first := true
	err = s.o.Spool.List(func(m *spool.Message) error {
		if !s.matches(m, f, now) {
			return nil
		}
		b, err := json.Marshal(s.message(m, false))
		if err != nil {
			return err
		}
		if !first {
			io.WriteString(w, ",")
		}
		first = false
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		// The status is sent already: break the answer off so the client
		// sees an error rather than a shorter list.
		s.o.Logger.Error("admin: list", "err", err)
		panic(http.ErrAbortHandler)
	}
	io.WriteString(w, "]\n")
}

func (s *Server) matches(m *spool.Message, f api.Filter, now time.Time) bool {
	if f.From != "" && !containsFold(bare(m.From), f.From) {
		return false
	}
	if f.OlderThan > 0 && now.Sub(m.Received) < f.OlderThan {
		return false
	}
	if f.Status == "held" && !m.Held {
		return false
	}
	rcptOK := func(r spool.Recipient) bool {
		if f.To != "" && !containsFold(bare(r.To), f.To) {
			return false
		}
		if f.Status != "" && f.Status != "held" && string(r.Status) != f.Status {
			return false
		}
		if f.Hop != "" {
			open := r.Status == spool.StatusPending || r.Status == spool.StatusDeferred
			if !open || s.o.NextHop == nil || !containsFold(s.o.NextHop(r.To), f.Hop) {
				return false
			}
		}
		return true
	}
	for _, r := range m.Recipients {
		if rcptOK(r) {
			return true
		}
	}
	return false
}

// maxShownHeader bounds what `relay queue show` reads of a message to
// find its header section.
const maxShownHeader = 1 << 20

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	id, ok := s.resolve(w, r.PathValue("id"))
	if !ok {
		return
	}
	m, err := s.o.Spool.Get(id)
	switch {
	case err == nil:
		out := s.message(m, true)
		if body, err := s.o.Spool.OpenBody(id); err == nil {
			// The header section only: never the whole of a large body.
			head, _ := io.ReadAll(io.LimitReader(body.NewReader(), maxShownHeader))
			body.Close()
			out.Headers = headerSection(head)
		}
		evs, err := s.o.Spool.Events(id)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		out.Events = events(evs, m.Recipients)
		writeJSON(w, out)
		return
	case !errors.Is(err, spool.ErrNotFound):
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	h, err := s.o.Spool.History(id) // retired meanwhile, or long ago
	if err != nil {
		s.notQueued(w, id, err)
		return
	}
	out := s.message(&h.Message, false)
	out.State = api.StateRetired
	for i := range out.Recipients { // nothing is due any more
		out.Recipients[i].NextAttempt, out.Recipients[i].NextHop = nil, ""
	}
	at := h.At
	out.Retired = &at
	out.Events = events(h.Events, h.Recipients)
	writeJSON(w, out)
}

func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	var do func(id string) (int, error)
	var done, idle string // what Result says when recipients changed (%s: "2 recipients"), and when none did
	switch action {
	case api.ActionHold:
		do, done, idle = s.o.Spool.Hold, "held: %s will not be attempted until released", "already held"
	case api.ActionRelease:
		do, done, idle = s.o.Spool.Release, "released: %s due now", "not held"
	case api.ActionRetry:
		do, done, idle = s.o.Spool.Retry, "%s due now", "nothing to do: every recipient is due already"
	case api.ActionDelete:
		do, done, idle = s.o.Spool.Delete, "deleted without a DSN: %s not delivered", "deleted"
	case api.ActionBounce:
		do, done, idle = s.o.Queue.Bounce, "bounced: %s failed now", "nothing to bounce"
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown action %q: want hold, release, retry, delete or bounce", action))
		return
	}
	id, ok := s.resolve(w, r.PathValue("id"))
	if !ok {
		return
	}
	n, err := do(id)
	switch {
	case errors.Is(err, spool.ErrHeld):
		writeError(w, http.StatusConflict, fmt.Errorf("%s is held: release it first", id))
		return
	case errors.Is(err, spool.ErrNotFound):
		s.notQueued(w, id, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if action == api.ActionRelease || action == api.ActionRetry {
		s.o.Queue.Revive()
		s.o.Queue.Notify()
	}
	c := api.Change{ID: id, Action: action, Recipients: n, Result: idle}
	if n > 0 {
		c.Result = fmt.Sprintf(done, recipients(n))
	}
	s.o.Logger.Info("admin: "+action, "id", id, "recipients", n, "result", c.Result)
	writeJSON(w, c)
}

func (s *Server) retryAll(w http.ResponseWriter, r *http.Request) {
	retried, err := s.o.Spool.RetryAll()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	changes := []api.Change{}
	for _, m := range retried {
		changes = append(changes, api.Change{ID: m.ID, Action: api.ActionRetry, Recipients: m.Recipients, Result: recipients(m.Recipients) + " due now"})
	}
	s.o.Queue.Revive()
	s.o.Queue.Notify()
	s.o.Logger.Info("admin: retry all", "messages", len(changes))
	writeJSON(w, changes)
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st, err := s.o.Spool.Stats(s.o.NextHop)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	out := api.Stats{Messages: st.Messages, Held: st.Held, Recipients: map[string]int{}, ByHop: map[string]int{}}
	for _, status := range []spool.Status{spool.StatusPending, spool.StatusDeferred, spool.StatusDelivered, spool.StatusFailed} {
		out.Recipients[string(status)] = st.ByStatus[status]
	}
	for hop, n := range st.ByHop {
		out.ByHop[hop] = n
	}
	out.Hops = []api.HopShaping{}
	for _, h := range s.o.Queue.Hops() {
		out.Hops = append(out.Hops, api.HopShaping{
			Hop: h.Key, Sessions: h.Sessions, Queued: h.Queued, SessionLimit: h.Limit, Concurrency: h.Concurrency,
			Rate: rateText(h.Rate), ConfiguredRate: rateText(h.Configured), ThrottleLevel: h.Level, Throttled: h.Throttles,
		})
	}
	sort.Slice(out.Hops, func(i, j int) bool { return out.Hops[i].Hop < out.Hops[j].Hop })
	if st.OldestID != "" {
		out.Oldest = &api.Oldest{ID: st.OldestID, Created: st.Oldest, AgeSeconds: s.o.Now().Sub(st.Oldest).Seconds()}
	}
	if out.SpoolBytes, err = s.o.Spool.DiskSize(); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	out.Webhooks = []api.Webhook{}
	if s.o.Webhooks != nil {
		if out.Webhooks, err = s.o.Webhooks(); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
	}
	writeJSON(w, out)
}

// rateText is a rate as configured ("20/s"), "" for no limit.
func rateText(r ratelimit.Rate) string {
	if r.IsZero() {
		return ""
	}
	return r.String()
}

// resolve turns the {id} of a path, possibly a prefix, into a message ID,
// or answers the error itself.
func (s *Server) resolve(w http.ResponseWriter, prefix string) (string, bool) {
	id, err := s.o.Spool.Resolve(prefix)
	switch {
	case errors.Is(err, spool.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Errorf("no message %s", prefix))
	case errors.Is(err, spool.ErrAmbiguous):
		writeError(w, http.StatusConflict, fmt.Errorf("%s names more than one message: give more of the ID", prefix))
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	default:
		return id, true
	}
	return "", false
}

// notQueued answers for a message that is not (or no longer) queued.
func (s *Server) notQueued(w http.ResponseWriter, id string, err error) {
	if !errors.Is(err, spool.ErrNotFound) {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if h, herr := s.o.Spool.History(id); herr == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s is no longer queued (it left the queue at %s)", id, h.At.UTC().Format(time.RFC3339)))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("no message %s", id))
}

// --- conversions ---

// message converts a queued message (or a retired one's summary); detail
// adds each open recipient's schedule.
func (s *Server) message(m *spool.Message, detail bool) api.Message {
	out := api.Message{
		ID: m.ID, From: bare(m.From), Created: m.Received, Held: m.Held, Size: m.Size,
		State: api.StateQueued, Client: m.Client, Helo: m.Helo, AuthUser: m.AuthUser,
		MailParams: strings.TrimSpace(m.MailParams), Hops: m.Hops,
		Recipients: make([]api.Recipient, len(m.Recipients)),
	}
	if p, err := envelope.ParseMailParams(strings.TrimSpace(m.MailParams)); err == nil {
		out.Priority, out.RequireTLS = int(p.Priority), p.RequireTLS
		if p.ByMode != "" {
			by := m.Received.Add(time.Duration(p.ByTime) * time.Second)
			out.DeliverBy, out.ByMode = &by, string(p.ByMode)
		}
	}
	for i, r := range m.Recipients {
		ar := api.Recipient{
			Index: i, Address: bare(r.To), Params: strings.TrimSpace(r.Params), Status: string(r.Status),
			Attempts: r.Attempts, LastReply: r.LastReply,
		}
		if r.Status == spool.StatusPending || r.Status == spool.StatusDeferred {
			if s.o.NextHop != nil {
				ar.NextHop = s.o.NextHop(r.To)
			}
			if !m.Held && !r.NextAttempt.IsZero() {
				next := r.NextAttempt
				ar.NextAttempt = &next
				if detail {
					ar.Schedule = s.o.Retry.Forecast(m.Received, next, r.Attempts, scheduleLen)
				}
			}
		}
		out.Recipients[i] = ar
	}
	return out
}

func events(evs []spool.Event, rcpts []spool.Recipient) []api.Event {
	out := make([]api.Event, len(evs))
	for i, e := range evs {
		out[i] = api.Event{At: e.At, Kind: e.Kind, Text: e.Text}
		if e.Rcpt >= 0 && e.Rcpt < len(rcpts) {
			out[i].Recipient = bare(rcpts[e.Rcpt].To)
		}
	}
	return out
}

// recipients says "1 recipient" or "n recipients".
func recipients(n int) string {
	if n == 1 {
		return "1 recipient"
	}
	return fmt.Sprintf("%d recipients", n)
}

// bare strips the angle brackets of a wire-form path: "<a@b>" is "a@b",
// the null path "<>" is "".
func bare(p string) string {
	if len(p) >= 2 && p[0] == '<' && p[len(p)-1] == '>' {
		return p[1 : len(p)-1]
	}
	return p
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// headerSection returns the header lines of a message, up to the blank
// line, at most maxHeaders bytes.
func headerSection(body []byte) string {
	end := bytes.Index(body, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(body)
	} else {
		end += 2
	}
	return string(body[:min(end, maxHeaders)])
}

// unban lifts a login ban (relay user unban). The daemon holds the bans
// in memory, so this is the one way to reach them.
func (s *Server) unban(w http.ResponseWriter, r *http.Request) {
	if s.o.Unban == nil {
		writeError(w, http.StatusNotImplemented, errors.New("this daemon keeps no login bans"))
		return
	}
	ip, err := netip.ParseAddr(r.PathValue("address"))
	if err != nil || ip.Zone() != "" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%q is not an IP address", r.PathValue("address")))
		return
	}
	ip = ip.Unmap()
	forgotten := s.o.Unban(ip)
	s.o.Logger.Info("admin: login ban lifted", "client", ip.String(), "forgotten", forgotten)
	writeJSON(w, api.Unban{Address: ip.String(), Forgotten: forgotten})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, err error) {
	b, _ := json.Marshal(api.Error{Error: err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
