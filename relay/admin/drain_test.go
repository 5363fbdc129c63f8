package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/admin/api"
)

// TestTransferRequests: a daemon without a transfer engine says so; a
// request must name a target and either IDs or all, and unknown IDs are
// refused before anything moves.
func TestTransferRequests(t *testing.T) {
	ctx := context.Background()
	var apiErr *client.APIError
	plain := newFixture(t)
	_, err := plain.cl.Transfer(ctx, "127.0.0.2:25", nil, true)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotImplemented {
		t.Errorf("transfer without an engine: %v; want 501", err)
	}
	if _, err := plain.cl.Drain(ctx, ""); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotImplemented {
		t.Errorf("drain without an engine: %v; want 501", err)
	}

	var asked []string
	f := newFixtureWith(t, func(o *Options) {
		o.Transfer = func(_ context.Context, to string, ids []string, all bool) ([]api.Change, error) {
			asked = append(asked, to+" "+strings.Join(ids, ",")+map[bool]string{true: " all"}[all])
			return nil, nil
		}
	})
	id := f.enqueue("<a@b.test>", "<u@c.test>")
	for _, c := range []struct {
		ids  []string
		all  bool
		want int
	}{
		{nil, false, http.StatusBadRequest},
		{[]string{id}, true, http.StatusBadRequest},
		{[]string{"ZZZZ"}, false, http.StatusNotFound},
		{[]string{id[:10]}, false, 0},
		{nil, true, 0},
	} {
		_, err := f.cl.Transfer(ctx, "127.0.0.2:25", c.ids, c.all)
		if c.want == 0 && err != nil || c.want != 0 && (!errors.As(err, &apiErr) || apiErr.Status != c.want) {
			t.Errorf("transfer %v all=%v: %v; want status %d", c.ids, c.all, err, c.want)
		}
	}
	if want := []string{"127.0.0.2:25 " + id, "127.0.0.2:25  all"}; strings.Join(asked, "|") != strings.Join(want, "|") {
		t.Errorf("engine asked %q, want %q (the prefix resolved)", asked, want)
	}
}
