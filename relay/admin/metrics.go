package admin

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/spool"
)

// Metrics are the relay's Prometheus metrics. They live in a registry of
// their own (no global state, so several relays in one test process keep
// apart). Counters are fed by hooks (smtpd.Metrics, the queue's result
// and DSN hooks); queue sizes and spool bytes are read from the spool
// when scraped.
type Metrics struct {
	reg             *prometheus.Registry
	accepted        prometheus.Counter
	rejected        *prometheus.CounterVec
	acceptLatency   prometheus.Histogram
	deliveries      *prometheus.CounterVec
	deliveryLatency *prometheus.HistogramVec
	dsns            prometheus.Counter
	byPriority      *prometheus.CounterVec
	byMisses        *prometheus.CounterVec
	webhooks        *webhookMetrics // nil until Webhooks

	now       func() time.Time
	cacheFor  time.Duration
	tlsPolicy *prometheus.CounterVec // tlsmetrics.go
}

// MetricsOptions configure NewMetrics.
type MetricsOptions struct {
	// Spool is read at scrape time for queue sizes and disk use; nil: no
	// queue metrics.
	Spool *spool.Spool
	// Connections returns the number of open SMTP connections; nil: none.
	Connections func() int
	// QueueCacheFor is how long a count of the queue is reused: counting
	// reads the whole queue, which a scrape every few seconds must not
	// do with a deep one. 0: DefaultQueueCacheFor.
	QueueCacheFor time.Duration
	// Hops returns the shaping state of the busy next hops; nil: no hop
	// metrics.
	Hops func() []queue.HopState
	Now  func() time.Time // nil: time.Now
}

// DefaultQueueCacheFor is MetricsOptions.QueueCacheFor when 0.
const DefaultQueueCacheFor = 10 * time.Second

// latencyBuckets span a local delivery (milliseconds) to a message
// delivered after days of retries, in seconds.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600}

// NewMetrics creates the metrics and their registry.
func NewMetrics(o MetricsOptions) *Metrics {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueueCacheFor == 0 {
		o.QueueCacheFor = DefaultQueueCacheFor
	}
	m := &Metrics{
		now: o.Now, cacheFor: o.QueueCacheFor,
		reg: prometheus.NewRegistry(),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_smtp_messages_accepted_total",
			Help: "Messages accepted over SMTP and stored (250 sent).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_smtp_rejected_total",
			Help: "SMTP commands refused with a 4xx or 5xx reply, by command, reply code and enhanced status code (the reason: 5.7.1 relaying denied, 5.1.1 no such user, 5.3.4 too big, 5.6.0 bare LF, 4.3.0 storage, ...).",
		}, []string{"command", "code", "status"}),
		acceptLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_smtp_accept_duration_seconds",
			Help:    "Time from the end of a message to its 250 reply: storing and syncing it.",
			Buckets: latencyBuckets,
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_deliveries_total",
			Help: "Delivery outcomes per recipient, by result (delivered, deferred, failed) and next hop.",
		}, []string{"result", "next_hop"}),
		deliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_delivery_duration_seconds",
			Help:    "Time from acceptance to each recipient's delivery outcome, by result.",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		dsns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_dsn_sent_total",
			Help: "Delivery status notifications (bounces, delay warnings, success notices) queued to senders.",
		}),
	}
	m.byPriority = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_deliveries_by_priority_total",
		Help: "Delivery outcomes per recipient, by result and the message's MT-PRIORITY (RFC 6710), -9..9.",
	}, []string{"result", "priority"})
	m.byMisses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_deliver_by_misses_total",
		Help: "Recipients of BY (RFC 2852) messages that missed their deadline: failed for it (mode R) or delivered or failed after it (mode N), by mode.",
	}, []string{"mode"})
	m.tlsPolicy = tlsPolicyCounter()
	m.reg.MustRegister(m.byPriority, m.byMisses, m.tlsPolicy)
	m.reg.MustRegister(m.accepted, m.rejected, m.acceptLatency, m.deliveries, m.deliveryLatency, m.dsns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.Connections != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relay_smtp_connections",
			Help: "SMTP connections open now.",
		}, func() float64 { return float64(o.Connections()) }))
	}
	if o.Hops != nil {
		m.reg.MustRegister(newHopCollector(o.Hops))
	}
	if o.Spool != nil {
		m.reg.MustRegister(newQueueCollector(o.Spool, o.QueueCacheFor, o.Now))
		space := o.Spool.Space()
		for _, g := range []struct {
			name, help string
			pick       func(free, inflight, reserve int64) int64
		}{
			{"relay_spool_free_bytes", "Free space in the spool's filesystem, the ballast not counted.", func(f, _, _ int64) int64 { return f }},
			{"relay_spool_inflight_bytes", "Bytes of messages being stored, counted against the reserve.", func(_, i, _ int64) int64 { return i }},
			{"relay_spool_reserve_bytes", "Free space new mail must leave ([queue] min_free_space): below it, 452 4.3.1.", func(_, _, r int64) int64 { return r }},
		} {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help},
				func() float64 { return float64(g.pick(space.Free())) }))
		}
	}
	// Every result label exists from the start, so rates work before the
	// first failure.
	for _, r := range []spool.Status{spool.StatusDelivered, spool.StatusDeferred, spool.StatusFailed} {
		m.deliveryLatency.WithLabelValues(string(r))
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Refused counts an SMTP refusal (smtpd.Metrics).
func (m *Metrics) Refused(command string, r smtpd.Reply) {
	status := r.Enhanced
	if status == "" {
		status = "none"
	}
	m.rejected.WithLabelValues(command, strconv.Itoa(r.Code), status).Inc()
}

// Accepted counts a stored message and the time its 250 took
// (smtpd.Metrics).
func (m *Metrics) Accepted(d time.Duration) {
	m.accepted.Inc()
	m.acceptLatency.Observe(d.Seconds())
}

// Delivery counts one recipient's outcome through next hop hop, latency
// after the message was accepted.
func (m *Metrics) Delivery(result spool.Status, hop string, latency time.Duration) {
	m.deliveries.WithLabelValues(string(result), hop).Inc()
	m.deliveryLatency.WithLabelValues(string(result)).Observe(latency.Seconds())
}

// Levels counts one recipient's outcome by the message's MT-PRIORITY and,
// for a message with a BY deadline (byMode "R" or "N"), whether that
// outcome missed it.
func (m *Metrics) Levels(result spool.Status, priority int, byMode string, missed bool) {
	m.byPriority.WithLabelValues(string(result), strconv.Itoa(priority)).Inc()
	if byMode != "" && missed {
		m.byMisses.WithLabelValues(byMode).Inc()
	}
}

// DSN counts a delivery status notification queued to a sender.
func (m *Metrics) DSN() { m.dsns.Inc() }

// queueCollector reports the queue's size and the spool's disk use,
// counted at scrape time at most once per cacheFor.
type queueCollector struct {
	sp       *spool.Spool
	cacheFor time.Duration
	now      func() time.Time

	messages, held, recipients, oldest, bytes *prometheus.Desc

	mu    sync.Mutex
	at    time.Time // of the cached count; zero: none
	stats *spool.Stats
	size  int64
}

func newQueueCollector(sp *spool.Spool, cacheFor time.Duration, now func() time.Time) *queueCollector {
	return &queueCollector{
		sp: sp, cacheFor: cacheFor, now: now,
		messages:   prometheus.NewDesc("relay_queue_messages", "Messages in the queue.", nil, nil),
		held:       prometheus.NewDesc("relay_queue_held_messages", "Queued messages held by an operator.", nil, nil),
		recipients: prometheus.NewDesc("relay_queue_recipients", "Recipients of queued messages by status.", []string{"status"}, nil),
		oldest:     prometheus.NewDesc("relay_queue_oldest_message_age_seconds", "Age of the oldest queued message; 0 when the queue is empty.", nil, nil),
		bytes:      prometheus.NewDesc("relay_spool_bytes", "Disk space used by the spool.", nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.held, c.recipients, c.oldest, c.bytes} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.stats == nil || now.Sub(c.at) >= c.cacheFor || now.Before(c.at) {
		st, err := c.sp.Stats(nil)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.messages, err)
			return
		}
		size, err := c.sp.DiskSize()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.bytes, err)
			return
		}
		c.stats, c.size, c.at = st, size, now
	}
	st := c.stats
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(st.Held))
	for _, s := range []spool.Status{spool.StatusPending, spool.StatusDeferred, spool.StatusDelivered, spool.StatusFailed} {
		ch <- prometheus.MustNewConstMetric(c.recipients, prometheus.GaugeValue, float64(st.ByStatus[s]), string(s))
	}
	age := 0.0
	if !st.Oldest.IsZero() {
		age = now.Sub(st.Oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(c.size))
}
