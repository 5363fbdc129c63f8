package admin

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/spool"
)

// shape answers GET /v1/shape: Postfix's qshape, computed in one pass over
// the queue; memory follows the number of destinations, not of messages.
func (s *Server) shape(w http.ResponseWriter, r *http.Request) {
	by := r.URL.Query().Get("by")
	switch by {
	case "":
		by = api.ShapeByDomain
	case api.ShapeByDomain:
	case api.ShapeByHop:
		if s.o.NextHop == nil {
			writeError(w, http.StatusNotImplemented, fmt.Errorf("this daemon does not report next hops"))
			return
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("by %q: want domain or hop", by))
		return
	}
	held := r.URL.Query().Get("held") == "true"
	key := destinationDomain
	if by == api.ShapeByHop {
		key = s.o.NextHop
	}
	sh := newShaper(s.o.Now(), key, held)
	if err := s.o.Spool.List(func(m *spool.Message) error { sh.add(m); return nil }); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	out := sh.result()
	out.By = by
	writeJSON(w, out)
}

// shaper counts recipients into a Shape.
type shaper struct {
	now  time.Time
	key  func(to string) string
	held bool
	rows map[string]*api.ShapeRow
	tot  api.ShapeRow
}

func newShaper(now time.Time, key func(string) string, held bool) *shaper {
	n := len(api.ShapeBuckets) + 1
	return &shaper{now: now, key: key, held: held, rows: map[string]*api.ShapeRow{},
		tot: api.ShapeRow{Destination: "TOTAL", Counts: make([]int, n)}}
}

// add counts the recipients of m that are still to be delivered.
func (sh *shaper) add(m *spool.Message) {
	if m.Held && !sh.held {
		return
	}
	b := bucket(sh.now.Sub(m.Received))
	for _, r := range m.Recipients {
		if r.Status != spool.StatusPending && r.Status != spool.StatusDeferred {
			continue
		}
		k := sh.key(r.To)
		row := sh.rows[k]
		if row == nil {
			row = &api.ShapeRow{Destination: k, Counts: make([]int, len(sh.tot.Counts))}
			sh.rows[k] = row
		}
		row.Counts[b]++
		row.Total++
		sh.tot.Counts[b]++
		sh.tot.Total++
	}
}

func (sh *shaper) result() api.Shape {
	out := api.Shape{Held: sh.held, Buckets: api.ShapeLabels(), Total: sh.tot, Rows: []api.ShapeRow{}}
	for _, r := range sh.rows {
		out.Rows = append(out.Rows, *r)
	}
	sort.Slice(out.Rows, func(i, j int) bool {
		a, b := out.Rows[i], out.Rows[j]
		return a.Total > b.Total || a.Total == b.Total && a.Destination < b.Destination
	})
	return out
}

// bucket is the index of the age bucket of a message that age old.
func bucket(age time.Duration) int {
	for i, b := range api.ShapeBuckets {
		if age < b {
			return i
		}
	}
	return len(api.ShapeBuckets)
}

// destinationDomain is where a forward path goes next by name: the first
// hop of its source route, else its domain, in lower case.
func destinationDomain(to string) string {
	p, err := envelope.ParseForwardPath(to, true)
	switch {
	case err != nil:
		return "(unparsable)"
	case len(p.Route) > 0:
		return strings.ToLower(p.Route[0])
	case p.Domain == "":
		return "(local postmaster)"
	}
	return strings.ToLower(p.Domain)
}
