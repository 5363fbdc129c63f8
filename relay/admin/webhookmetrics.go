package admin

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/relay-mta/relay/relay/admin/api"
)

// webhookMetrics are the metrics of the [[webhook]] posters: events by
// result, counted as they are posted, and each webhook's backlog, read
// at scrape time at most once per cacheFor (counting reads the outbox).
type webhookMetrics struct {
	results *prometheus.CounterVec
	backlog func() ([]api.Webhook, error)
	now     func() time.Time
	cache   time.Duration

	size, age, failing *prometheus.Desc

	mu    sync.Mutex
	at    time.Time
	hooks []api.Webhook
}

// Webhooks registers the webhook metrics; backlog reports the webhooks
// (relay.Relay's view of them). Call it once, before the first scrape.
func (m *Metrics) Webhooks(backlog func() ([]api.Webhook, error)) {
	w := &webhookMetrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webhook_events_total",
			Help: "Webhook events by result: posted (2xx), retry (kept for a later post), refused (a final 4xx: dropped), expired (older than the lifetime: dropped).",
		}, []string{"webhook", "result"}),
		backlog: backlog, now: m.now, cache: m.cacheFor,
		size:    prometheus.NewDesc("relay_webhook_backlog_events", "Webhook events waiting in the spool to be posted.", []string{"webhook"}, nil),
		age:     prometheus.NewDesc("relay_webhook_oldest_event_age_seconds", "Age of the oldest webhook event waiting; 0 when none.", []string{"webhook"}, nil),
		failing: prometheus.NewDesc("relay_webhook_failures", "Failed rounds of posts since the last success; 0 while the receiver answers.", []string{"webhook"}, nil),
	}
	m.webhooks = w
	m.reg.MustRegister(w.results, w)
}

// WebhookResult counts one event's result for webhook name.
func (m *Metrics) WebhookResult(name, result string) {
	if m.webhooks != nil {
		m.webhooks.results.WithLabelValues(name, result).Inc()
	}
}

func (w *webhookMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- w.size
	ch <- w.age
	ch <- w.failing
}

func (w *webhookMetrics) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if w.hooks == nil || now.Sub(w.at) >= w.cache || now.Before(w.at) {
		hooks, err := w.backlog()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(w.size, err)
			return
		}
		w.hooks, w.at = hooks, now
	}
	for _, h := range w.hooks {
		ch <- prometheus.MustNewConstMetric(w.size, prometheus.GaugeValue, float64(h.Backlog), h.Name)
		ch <- prometheus.MustNewConstMetric(w.age, prometheus.GaugeValue, h.OldestAgeSeconds, h.Name)
		ch <- prometheus.MustNewConstMetric(w.failing, prometheus.GaugeValue, float64(h.Failures), h.Name)
	}
}
