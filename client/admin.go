package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
)

// Admin is a client of a relay daemon's admin socket (docs/design.md §11):
// what `relay queue` runs. The wire format is package api.
type Admin struct {
	socket string
	hc     *http.Client
}

// ErrDaemonDown is returned (wrapped) when nothing answers on the admin
// socket: the daemon is not running, or runs with another socket.
var ErrDaemonDown = errors.New("the relay daemon is not running")

// APIError is an error answer of the daemon: an HTTP status and the
// daemon's one-line explanation.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// NotFound reports whether err says that a message does not exist (or is
// no longer queued, for actions).
func NotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// NewAdmin returns a client for the admin socket at path.
func NewAdmin(socket string) *Admin {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &Admin{
		socket: socket,
		hc: &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return d.DialContext(ctx, "unix", socket)
				},
				DisableKeepAlives: true, // one command, a few requests
			},
			// A listing of a deep queue takes a while; nothing an operator
			// runs should take longer.
			Timeout: 5 * time.Minute,
		},
	}
}

// List returns the queued messages that f selects, oldest first.
func (a *Admin) List(ctx context.Context, f api.Filter) ([]api.Message, error) {
	var out []api.Message
	path := api.Version + "/messages"
	if q := f.Query().Encode(); q != "" {
		path += "?" + q
	}
	if err := a.do(ctx, http.MethodGet, path, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Show returns one message, queued or retired within the history window,
// with its headers, schedule and events. id may be a unique prefix.
func (a *Admin) Show(ctx context.Context, id string) (*api.Message, error) {
	var m api.Message
	if err := a.do(ctx, http.MethodGet, api.Version+"/messages/"+url.PathEscape(id), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Act performs action (api.ActionHold, ...) on message id (a unique
// prefix will do) and returns what changed.
func (a *Admin) Act(ctx context.Context, action, id string) (*api.Change, error) {
	var c api.Change
	if err := a.do(ctx, http.MethodPost, api.Version+"/messages/"+url.PathEscape(id)+"/"+url.PathEscape(action), &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// RetryAll makes every queued message that is not held due now and
// returns the messages that changed.
func (a *Admin) RetryAll(ctx context.Context) ([]api.Change, error) {
	var out []api.Change
	if err := a.do(ctx, http.MethodPost, api.Version+"/retry", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Transfer hands the messages ids (unique prefixes will do), or with all
// every queued message, to the relay at to ("host:port") and returns one
// Change per message: Recipients > 0 for those transferred.
func (a *Admin) Transfer(ctx context.Context, to string, ids []string, all bool) ([]api.Change, error) {
	q := url.Values{"to": {to}}
	if all {
		q.Set("all", "true")
	}
	for _, id := range ids {
		q.Add("id", id)
	}
	var out []api.Change
	if err := a.do(ctx, http.MethodPost, api.Version+"/transfer?"+q.Encode(), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Drain makes the daemon accept no more mail and exit once its queue is
// transferred to to ("host:port") or, with to "", delivered.
func (a *Admin) Drain(ctx context.Context, to string) (*api.Drain, error) {
	path := api.Version + "/drain"
	if to != "" {
		path += "?" + url.Values{"to": {to}}.Encode()
	}
	var d api.Drain
	if err := a.do(ctx, http.MethodPost, path, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Stats returns the queue's counts.
func (a *Admin) Stats(ctx context.Context) (*api.Stats, error) {
	var st api.Stats
	if err := a.do(ctx, http.MethodGet, api.Version+"/stats", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Shape returns the queue's shape (qshape): by is api.ShapeByDomain
// (or "") or api.ShapeByHop; held counts held messages too.
func (a *Admin) Shape(ctx context.Context, by string, held bool) (*api.Shape, error) {
	var sh api.Shape
	if err := a.do(ctx, http.MethodGet, api.Version+"/shape?"+api.ShapeQuery(by, held).Encode(), &sh); err != nil {
		return nil, err
	}
	return &sh, nil
}

// Unban lifts the login ban of the client address addr (and forgets its
// failed logins) in the running daemon.
func (a *Admin) Unban(ctx context.Context, addr string) (*api.Unban, error) {
	var u api.Unban
	if err := a.do(ctx, http.MethodDelete, api.Version+"/bans/"+url.PathEscape(addr), &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// do runs one request and decodes its JSON answer into out.
func (a *Admin) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://relay"+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return fmt.Errorf("%w: no admin socket at %s", ErrDaemonDown, a.socket)
		case errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("%w: nothing answers on %s", ErrDaemonDown, a.socket)
		case errors.Is(err, syscall.EACCES):
			return fmt.Errorf("admin socket %s: permission denied (it is the daemon user's alone)", a.socket)
		}
		return fmt.Errorf("admin socket %s: %w", a.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("admin socket %s: reading the answer: %w", a.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin socket %s: bad answer: %w", a.socket, err)
	}
	return nil
}
