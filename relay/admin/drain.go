package admin

import (
	"fmt"
	"net/http"

	"github.com/relay-mta/relay/relay/admin/api"
)

// Draining a node and handing its queue to another relay (design §18):
// the work is the daemon's (Options.Transfer, Options.Drain); these
// handlers only read the request and answer.

// transfer answers POST /v1/transfer?to=HOST:PORT&id=...|all=true.
func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	if s.o.Transfer == nil {
		writeError(w, http.StatusNotImplemented, fmt.Errorf("this daemon cannot transfer messages"))
		return
	}
	q := r.URL.Query()
	to, all := q.Get("to"), q.Get("all") == "true"
	if to == "" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("transfer: to (host:port) is missing"))
		return
	}
	var ids []string
	for _, p := range q["id"] {
		id, ok := s.resolve(w, p)
		if !ok {
			return
		}
		ids = append(ids, id)
	}
	if all == (len(ids) > 0) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("transfer: give message IDs or all=true, not both or neither"))
		return
	}
	changes, err := s.o.Transfer(r.Context(), to, ids, all)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if changes == nil {
		changes = []api.Change{}
	}
	s.o.Logger.Info("admin: transfer", "to", to, "messages", len(changes))
	writeJSON(w, changes)
}

// drain answers POST /v1/drain[?to=HOST:PORT].
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if s.o.Drain == nil {
		writeError(w, http.StatusNotImplemented, fmt.Errorf("this daemon cannot drain"))
		return
	}
	d, err := s.o.Drain(r.URL.Query().Get("to"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.o.Logger.Info("admin: drain", "to", d.To, "queued", d.Queued)
	writeJSON(w, d)
}
