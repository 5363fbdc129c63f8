package admin

import "github.com/prometheus/client_golang/prometheus"

// SharedLimits registers the metrics of rate limits shared through the
// fleet's Redis ([fleet] redis): up reports whether Redis answered last,
// fallbacks counts the permits taken by the relay's own limiter alone.
// Call it once, before the first scrape, and only with [fleet] redis set.
func (m *Metrics) SharedLimits(up func() bool, fallbacks func() uint64) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relay_fleet_redis_up",
			Help: "1 while the fleet's Redis answers and rate limits are shared; 0 while this relay limits on its own.",
		}, func() float64 {
			if up() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "relay_rate_limit_local_fallbacks_total",
			Help: "Messages paced by this relay's own rate limiter alone because the fleet's Redis could not be asked.",
		}, func() float64 { return float64(fallbacks()) }),
	)
}
