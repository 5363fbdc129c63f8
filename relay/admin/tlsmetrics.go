package admin

import "github.com/prometheus/client_golang/prometheus"

// tlsPolicyCounter counts TLS session attempts with MX hosts by policy
// type (sts, tlsa, no-policy-found) and result: "success", or the
// TLS-RPT result type of the failure (starttls-not-supported,
// certificate-host-mismatch, validation-failure, dnssec-invalid, ...).
func tlsPolicyCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_tls_policy_sessions_total",
		Help: "TLS session attempts with MX hosts, by policy (sts, tlsa, no-policy-found) and result (success, or the TLS-RPT failure type: starttls-not-supported, certificate-host-mismatch, validation-failure, dnssec-invalid, ...).",
	}, []string{"policy", "result"})
}

// TLSPolicy counts one TLS session attempt under a policy; result is
// "success" or a TLS-RPT result type.
func (m *Metrics) TLSPolicy(policy, result string) {
	m.tlsPolicy.WithLabelValues(policy, result).Inc()
}
