// Package contrib holds no code: the directory holds what operators plug
// in around the relay, a Grafana dashboard (grafana/relay-dashboard.json)
// and Prometheus alert rules (prometheus/relay-alerts.yml, with promtool
// unit tests in relay-alerts.test.yml). Its test checks that every metric
// they query is one the relay exports.
package contrib
