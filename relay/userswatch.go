package relay

import (
	"context"
	"time"
)

// UsersPollInterval is how often a running relay looks for changes to its
// users file (`relay user add|passwd|del` replace it atomically): a new
// user or password works for SMTP AUTH and POP3 within this time, with no
// restart. SIGHUP (ReloadUsers) applies a change at once.
const UsersPollInterval = 2 * time.Second

// ReloadUsers re-reads the users file if it changed. On a malformed file
// the users in force stay, and the error names the file and line.
func (r *Relay) ReloadUsers() error {
	if r.users == nil {
		return nil
	}
	return r.users.Reload()
}

// watchUsers polls the users file until ctx ends. A stat per interval is
// all an unchanged file costs (users.DB.Reload).
func (r *Relay) watchUsers(ctx context.Context) {
	if r.users == nil {
		return
	}
	t := time.NewTicker(UsersPollInterval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A broken file is reported once, not at every poll.
		if err := r.users.Reload(); err != nil {
			if err.Error() != lastErr {
				r.log.Error("relay: users file not reloaded; keeping the users in force", "err", err)
			}
			lastErr = err.Error()
		} else {
			lastErr = ""
		}
	}
}
