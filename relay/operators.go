package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/admin"
	"github.com/relay-mta/relay/spool"
)

// operators is the daemon's side facing its operators: the admin socket
// ([admin] socket, package relay/admin), the Prometheus endpoint ([admin]
// metrics_listen), and the metrics the SMTP server and the queue feed.
type operators struct {
	metrics *admin.Metrics
	router  *Router // names next hops for the API and the metrics
	api     *admin.Server

	apiL     net.Listener // nil: no admin socket
	metricsL net.Listener // nil: no metrics endpoint
	metricsS *http.Server
	done     chan struct{} // closed when the servers have returned
}

// newOperators creates the metrics; it runs before the queue and the SMTP
// server are made, since their hooks feed the metrics.
func (r *Relay) newOperators() *operators {
	return &operators{
		router: NewRouter(r.cfg),
		metrics: admin.NewMetrics(admin.MetricsOptions{
			Spool:       r.spool,
			Connections: func() int { return r.smtp.Connections() },
			Hops:        func() []queue.HopState { return r.queue.Hops() },
			Now:         r.now,
		}),
	}
}

// nextHop names the lane a forward path goes through.
func (r *Relay) nextHop(to string) string {
	h, _, err := r.ops.router.Route(to)
	if err != nil {
		var pe *queue.PermanentError
		if errors.As(err, &pe) {
			return "unroutable"
		}
		return "unknown"
	}
	return h.Key
}

// onOutcome is the queue's OnOutcome hook: deliveries by result and next
// hop, and their latency since acceptance.
func (r *Relay) onOutcome(m *spool.Message, res spool.Result) {
	if res.Rcpt < 0 || res.Rcpt >= len(m.Recipients) {
		return
	}
	now := r.now()
	hop := res.NextHop // the lane it went through; else routed again
	if hop == "" {
		hop = r.nextHop(m.Recipients[res.Rcpt].To)
	}
	r.ops.metrics.Delivery(res.Status, hop, now.Sub(m.Received))
	p, err := envelope.ParseMailParams(strings.TrimSpace(m.MailParams))
	if err != nil {
		return
	}
	// A deadline is missed by a final outcome at or after it, or by a
	// failure for it (5.4.7: not deliverable by then, or not relayable
	// with it).
	final := res.Status == spool.StatusDelivered || res.Status == spool.StatusFailed
	deadline := m.Received.Add(time.Duration(p.ByTime) * time.Second)
	missed := final && (!now.Before(deadline) || res.Status == spool.StatusFailed && strings.Contains(res.Reply, "5.4.7"))
	r.ops.metrics.Levels(res.Status, int(p.Priority), string(p.ByMode), missed)
}

// onDSN is the queue's OnDSN hook.
func (r *Relay) onDSN(id, dsnID string) { r.ops.metrics.DSN() }

// listenOperators opens the admin socket and the metrics listener, so
// that a socket in use or a taken port stops the daemon at start.
func (r *Relay) listenOperators() error {
	o := r.ops
	if o.apiL != nil || o.metricsL != nil {
		return nil // Listen was called before
	}
	if path := r.cfg.Admin.Socket; path != "" {
		l, err := admin.Listen(path)
		if err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		o.apiL = l
	}
	if addr := r.cfg.Admin.MetricsListen; addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if o.apiL != nil {
				o.apiL.Close()
				o.apiL = nil
			}
			return fmt.Errorf("relay: metrics listen: %w", err)
		}
		o.metricsL = l
	}
	return nil
}

// MetricsAddr returns the address of the metrics endpoint, "" when there
// is none.
func (r *Relay) MetricsAddr() string {
	if r.ops.metricsL == nil {
		return ""
	}
	return r.ops.metricsL.Addr().String()
}

// serveOperators starts the admin API and the metrics endpoint on the
// listeners listenOperators opened.
func (r *Relay) serveOperators() {
	o := r.ops
	o.done = make(chan struct{})
	n := 0
	finished := make(chan struct{}, 2)
	if o.apiL != nil {
		o.api = admin.New(admin.Options{
			Spool:    r.spool,
			Queue:    r.queue,
			NextHop:  r.nextHop,
			Retry:    queue.RetryPolicy{Min: r.cfg.Queue.RetryMin, Max: r.cfg.Queue.RetryMax, Lifetime: r.cfg.Queue.Lifetime},
			Unban:    r.logins.unban,
			Metrics:  o.metrics.Handler(),
			Webhooks: r.webhookStatus,
			Transfer: r.Transfer,
			Drain:    r.Drain,
			Logger:   r.log,
			Now:      r.now,
		})
		n++
		go func() {
			if err := o.api.Serve(o.apiL); err != nil {
				r.log.Error("relay: admin socket", "err", err)
			}
			finished <- struct{}{}
		}()
		r.log.Info("relay: admin socket", "path", r.cfg.Admin.Socket)
	}
	if o.metricsL != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", o.metrics.Handler())
		o.metricsS = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		n++
		go func() {
			if err := o.metricsS.Serve(o.metricsL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.log.Error("relay: metrics endpoint", "err", err)
			}
			finished <- struct{}{}
		}()
		r.log.Info("relay: metrics", "url", "http://"+o.metricsL.Addr().String()+"/metrics")
	}
	go func() {
		for i := 0; i < n; i++ {
			<-finished
		}
		close(o.done)
	}()
}

// shutdownOperators stops both servers (requests in progress may finish
// until ctx ends) and removes the admin socket: from then on `relay
// queue` says the daemon is not running.
func (r *Relay) shutdownOperators(ctx context.Context) {
	o := r.ops
	if o.done == nil { // never served: just close what Listen opened
		for _, l := range []net.Listener{o.apiL, o.metricsL} {
			if l != nil {
				l.Close()
			}
		}
		return
	}
	if o.api != nil {
		if err := o.api.Shutdown(ctx); err != nil {
			r.log.Warn("relay: admin socket shutdown", "err", err)
		}
	}
	if o.metricsS != nil {
		o.metricsS.Shutdown(ctx)
	}
	<-o.done
}

// Hops is the traffic shaping state of the busy next hops (for tests and
// the admin API).
func (r *Relay) Hops() []queue.HopState { return r.queue.Hops() }

// Revive forgets next hops marked down (after an operator's retry).
func (r *Relay) Revive() { r.queue.Revive() }
