package relay

// The Prometheus client is the metrics library of the admin endpoint
// (DESIGN.md §7, issue: operators); this import keeps it in go.mod until
// the metrics code lands.
import _ "github.com/prometheus/client_golang/prometheus"
