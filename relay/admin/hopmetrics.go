package admin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/relay-mta/relay/queue"
)

// hopCollector reports the traffic shaping of each busy next hop
// (queue.Queue.Hops), read at scrape time: lanes come and go with the
// work, so the series of an idle hop disappear with its lane.
type hopCollector struct {
	hops                                    func() []queue.HopState
	sessions, limit, rate, level, throttled *prometheus.Desc
}

func newHopCollector(hops func() []queue.HopState) *hopCollector {
	l := []string{"hop"}
	return &hopCollector{
		hops:      hops,
		sessions:  prometheus.NewDesc("relay_hop_sessions", "Delivery sessions open (or opening) to a next hop.", l, nil),
		limit:     prometheus.NewDesc("relay_hop_session_limit", "Sessions a next hop may have now: per_hop_concurrency, less while it is throttled.", l, nil),
		rate:      prometheus.NewDesc("relay_hop_rate_per_second", "Messages per second a next hop may get now; 0: no limit.", l, nil),
		level:     prometheus.NewDesc("relay_hop_throttle_level", "How far a next hop is throttled after 421 or 4.7.x replies: each level halves sessions and rate; 0: not.", l, nil),
		throttled: prometheus.NewDesc("relay_hop_throttled_total", "Replies of a next hop that asked us to slow down (421, 4.7.x).", l, nil),
	}
}

func (c *hopCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.limit, c.rate, c.level, c.throttled} {
		ch <- d
	}
}

func (c *hopCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.hops() {
		rate := 0.0
		if !h.Rate.IsZero() {
			rate = float64(h.Rate.N) / h.Rate.Per.Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(h.Sessions), h.Key)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(h.Limit), h.Key)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, rate, h.Key)
		ch <- prometheus.MustNewConstMetric(c.level, prometheus.GaugeValue, float64(h.Level), h.Key)
		ch <- prometheus.MustNewConstMetric(c.throttled, prometheus.CounterValue, float64(h.Throttles), h.Key)
	}
}
