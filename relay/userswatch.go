package relay

import (
	"context"
	"time"
)

// UsersPollInterval is how often a running relay looks for changes to its
// users file (`relay user add|passwd|del` replace it atomically) and its
// aliases file: a new user or password works for SMTP AUTH and POP3, and
// a new alias for RCPT, within this time, with no restart. SIGHUP
// (ReloadUsers, ReloadAliases) applies a change at once.
const UsersPollInterval = 2 * time.Second

// ReloadUsers re-reads the users file if it changed. On a malformed file
// the users in force stay, and the error names the file and line.
func (r *Relay) ReloadUsers() error {
	if r.users == nil {
		return nil
	}
	return r.users.Reload()
}

// watchUsers polls the users file and the aliases file until ctx ends. A
// stat per file and interval is all an unchanged file costs.
func (r *Relay) watchUsers(ctx context.Context) {
	t := time.NewTicker(UsersPollInterval)
	defer t.Stop()
	var lastUsers, lastAliases string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A broken file is reported once, not at every poll.
		lastUsers = r.reportReload(r.ReloadUsers(), lastUsers, "relay: users file not reloaded; keeping the users in force")
		lastAliases = r.reportReload(r.ReloadAliases(), lastAliases, "relay: aliases file not reloaded; keeping the aliases in force")
	}
}

// reportReload logs err unless it is the one logged last time, and
// returns what to compare the next error with.
func (r *Relay) reportReload(err error, last, msg string) string {
	if err == nil {
		return ""
	}
	if err.Error() != last {
		r.log.Error(msg, "err", err)
	}
	return err.Error()
}
