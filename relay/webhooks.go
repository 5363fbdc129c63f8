package relay

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/webhook"
	"github.com/relay-mta/relay/spool"
)

// Webhooks ([[webhook]]): the spool writes each event a webhook asks for
// into its outbox, in the transaction of the change (spool/outbox.go),
// and one webhook.Poster per webhook posts them from there.

// webhookTTLSlack keeps an event in Badger a little past its webhook's
// lifetime, so that the poster, not the TTL, drops it (and logs it).
const webhookTTLSlack = time.Hour

// webhookSubscribers are the spool subscribers of cfg's webhooks.
func webhookSubscribers(cfg *config.Config) []spool.Subscriber {
	var subs []spool.Subscriber
	for _, h := range cfg.Webhooks {
		sb := spool.Subscriber{Name: h.Name, Kinds: h.Events}
		if h.Lifetime > 0 {
			sb.TTL = h.Lifetime + webhookTTLSlack
		}
		subs = append(subs, sb)
	}
	return subs
}

// readWebhookSecrets reads each webhook's secret_file, so that a missing
// or empty one stops the start with its name.
func readWebhookSecrets(cfg *config.Config) ([][]byte, error) {
	secrets := make([][]byte, len(cfg.Webhooks))
	for i, h := range cfg.Webhooks {
		if h.SecretFile == "" {
			continue
		}
		b, err := os.ReadFile(h.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("[[webhook]] %s: secret_file: %w", h.Name, err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("[[webhook]] %s: secret_file %s is empty", h.Name, h.SecretFile)
		}
		secrets[i] = b
	}
	return secrets, nil
}

// newWebhooks makes the posters, once the spool is open, and reports
// backlogs left by webhooks no longer configured (their TTL removes them).
func (r *Relay) newWebhooks(secrets [][]byte) {
	for i, h := range r.cfg.Webhooks {
		name := h.Name
		r.webhooks = append(r.webhooks, webhook.New(webhook.Hook{
			Name: name, URL: h.URL, Secret: secrets[i], Timeout: h.Timeout,
			RetryMin: h.RetryMin, RetryMax: h.RetryMax, Lifetime: h.Lifetime, Concurrency: h.Concurrency,
		}, webhook.Options{
			Source: r.spool, Hostname: r.cfg.Hostname, Logger: r.log, Now: r.now,
			OnResult: func(result string) { r.ops.metrics.WebhookResult(name, result) },
		}))
	}
	if len(r.webhooks) > 0 {
		r.ops.metrics.Webhooks(r.webhookStatus)
	}
	names, err := r.spool.OutboxNames()
	if err != nil {
		r.log.Error("relay: webhooks: list backlogs", "err", err)
		return
	}
	for _, name := range names {
		if !slices.ContainsFunc(r.cfg.Webhooks, func(h config.Webhook) bool { return h.Name == name }) {
			b, _ := r.spool.NoticeBacklog(name)
			r.log.Warn("relay: events kept for a webhook no longer configured; they expire with its lifetime (give a [[webhook]] this name to post them)",
				"webhook", name, "events", b.Notices)
		}
	}
}

// runWebhooks starts the posters; the returned function stops them and
// waits (events in flight stay in the spool and are posted again).
func (r *Relay) runWebhooks() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range r.webhooks {
		wg.Go(func() { p.Run(ctx) })
	}
	return func() { cancel(); wg.Wait() }
}

// webhookStatus reports each webhook's backlog and poster state, for
// `relay queue stats` and the metrics.
func (r *Relay) webhookStatus() ([]api.Webhook, error) {
	out := []api.Webhook{}
	now := r.now()
	for _, p := range r.webhooks {
		st := p.Status()
		b, err := r.spool.NoticeBacklog(st.Name)
		if err != nil {
			return nil, err
		}
		w := api.Webhook{Name: st.Name, URL: st.URL, Backlog: b.Notices, Posted: st.Posted, Failures: st.Failures, LastError: st.LastError}
		if !b.Oldest.IsZero() {
			w.OldestAgeSeconds = max(now.Sub(b.Oldest).Seconds(), 0)
		}
		if !st.NextAttempt.IsZero() {
			t := st.NextAttempt
			w.NextAttempt = &t
		}
		out = append(out, w)
	}
	return out, nil
}
