package contrib

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/relay-mta/relay/relay/admin"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/spool"
)

// exported scrapes a relay's metrics registry, as Prometheus would, after
// one event of every kind (so that labelled counters have their series),
// and returns every series name with the label names it carries.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(t.TempDir(), "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	m := admin.NewMetrics(admin.MetricsOptions{Spool: sp, Connections: func() int { return 1 }})
	m.Accepted(time.Millisecond)
	m.Refused("DATA", smtpd.Reply{Code: 451, Enhanced: "4.3.0"})
	for _, r := range []spool.Status{spool.StatusDelivered, spool.StatusDeferred, spool.StatusFailed} {
		m.Delivery(r, "smtp:127.0.0.3:2525", time.Second)
		m.Levels(r, 0, "R", true)
	}
	m.DSN()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("the relay's /metrics does not parse: %v", err)
	}
	out := map[string]map[string]bool{}
	add := func(name string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range labels {
			out[name][l] = true
		}
	}
	for name, f := range families {
		labels := map[string]bool{}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			add(name+"_bucket", labels)
			out[name+"_bucket"]["le"] = true
			add(name+"_sum", labels)
			add(name+"_count", labels)
		case dto.MetricType_SUMMARY:
			add(name, labels)
			out[name]["quantile"] = true
			add(name+"_sum", labels)
			add(name+"_count", labels)
		default:
			add(name, labels)
		}
	}
	return out
}

// Metric names are in the relay's namespaces; "up" is made by Prometheus
// for every target, and "instance" and "job" are its target labels.
var (
	metricRE   = regexp.MustCompile(`\b((?:relay|process|go)_[a-zA-Z0-9_]+|up)\b`)
	selectorRE = regexp.MustCompile(`\b((?:relay|process|go)_[a-zA-Z0-9_]+|up)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	targetOnly = map[string]bool{"instance": true, "job": true}
)

// checkExpr reports every metric expr queries that the relay does not
// export, every label it matches on that the metric does not have, and
// every delivery result that does not exist.
func checkExpr(where, expr string, have map[string]map[string]bool) []string {
	var bad []string
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		if m[1] != "up" && have[m[1]] == nil {
			bad = append(bad, fmt.Sprintf("%s: metric %s is not exported by the relay", where, m[1]))
		}
	}
	for _, s := range selectorRE.FindAllStringSubmatch(expr, -1) {
		for _, mm := range matcherRE.FindAllStringSubmatch(s[2], -1) {
			label, value := mm[1], mm[3]
			if targetOnly[label] || s[1] == "up" {
				continue
			}
			if !have[s[1]][label] {
				bad = append(bad, fmt.Sprintf("%s: %s has no label %q", where, s[1], label))
			}
			if label == "result" && !map[string]bool{"delivered": true, "deferred": true, "failed": true}[value] {
				bad = append(bad, fmt.Sprintf("%s: %s{result=%q}: results are delivered, deferred and failed", where, s[1], value))
			}
		}
	}
	if !metricRE.MatchString(expr) {
		bad = append(bad, fmt.Sprintf("%s: %q queries no metric of the relay", where, expr))
	}
	return bad
}

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

// TestDashboard: the Grafana dashboard is a dashboard Grafana can load
// (title, uid, schema version, panels on the 24-column grid with unique
// ids, each query with its own refId on the Prometheus data source) and
// every metric it queries exists in the relay.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/relay-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("relay-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("not a Grafana dashboard: title %q, uid %q, schemaVersion %d, %d panels", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	have := exported(t)
	var bad []string
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if ids[p.ID] {
			bad = append(bad, where+": id used twice")
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			bad = append(bad, fmt.Sprintf("%s: gridPos %+v is off the 24-column grid", where, g))
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || len(p.Targets) == 0 {
			bad = append(bad, where+": wants a Prometheus data source and at least one query")
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				bad = append(bad, fmt.Sprintf("%s: refId %q missing or used twice", where, tg.RefID))
			}
			refs[tg.RefID] = true
			bad = append(bad, checkExpr(where, tg.Expr, have)...)
			queries++
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			bad = append(bad, checkExpr("variable "+v.Name, v.Definition, have)...)
		}
	}
	for _, e := range bad {
		t.Error(e)
	}
	t.Logf("%d panels, %d queries checked against %d exported series names", len(d.Panels), queries, len(have))
}

// TestAlertRules: every alert rule has a name, an expression on metrics
// the relay exports, a severity and a summary. (promtool check rules,
// run by .ci/run, checks the PromQL itself.)
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("prometheus/relay-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("relay-alerts.yml: %v", err)
	}
	have := exported(t)
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %d of group %s: wants alert, labels.severity and annotations.summary: %+v", n, g.Name, r)
			}
			for _, e := range checkExpr("alert "+r.Alert, r.Expr, have) {
				t.Error(e)
			}
		}
	}
	// What the issue asks the rules to watch.
	for _, m := range []string{"relay_queue_oldest_message_age_seconds", "relay_deliveries_total", "relay_spool_reserve_bytes", "relay_dsn_sent_total"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("no alert rule watches %s", m)
		}
	}
	if n == 0 {
		t.Fatal("no alert rules")
	}
	t.Logf("%d alert rules checked", n)
}

// TestCheckExprCatches: the check itself finds a misspelt metric, a label
// the metric lacks and a result that does not exist.
func TestCheckExprCatches(t *testing.T) {
	have := exported(t)
	for _, expr := range []string{
		`rate(relay_queue_mesages[5m])`,
		`relay_deliveries_total{status="deferred"}`,
		`relay_deliveries_total{result="bounced"}`,
		`sum(rate(http_requests_total[5m]))`,
	} {
		if bad := checkExpr("test", expr, have); len(bad) == 0 {
			t.Errorf("%s passed the check", expr)
		}
	}
	if bad := checkExpr("test", `histogram_quantile(0.9, sum by (le) (rate(relay_smtp_accept_duration_seconds_bucket{instance=~"$instance"}[5m])))`, have); len(bad) != 0 {
		t.Errorf("a good expression: %v", bad)
	}
}
