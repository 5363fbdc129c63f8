package config

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Webhook is one [[webhook]] entry: delivery events posted as JSON to a
// URL, from the spool's outbox (see relay/webhook).
type Webhook struct {
	// Name (name) keeps the webhook's backlog in the spool: 1 to 64 of
	// [a-z0-9._-]. Absent, it is "hook-" and 8 hex digits of the URL's
	// SHA-256, so a new URL starts a new backlog.
	Name string
	// URL (url) is the http or https URL posted to.
	URL string
	// Events (events) are the event kinds posted (WebhookEvents).
	Events []string
	// SecretFile (secret_file) holds the HMAC-SHA256 key that signs each
	// post (X-Relay-Signature); "" for unsigned posts. Absolute.
	SecretFile string
	// Timeout (timeout) bounds one post.
	Timeout time.Duration
	// RetryMin and RetryMax (retry_min, retry_max): after a failed post
	// the webhook waits RetryMin, doubling up to RetryMax.
	RetryMin, RetryMax time.Duration
	// Lifetime (lifetime) is how long an event is retried before it is
	// dropped; 0 keeps it until the receiver takes it.
	Lifetime time.Duration
	// Concurrency (concurrency) is the number of posts in flight at once.
	Concurrency int
}

// WebhookEvents are the event kinds a webhook may ask for; spool's
// NoticeKinds, which a test keeps equal.
var WebhookEvents = []string{"received", "delivered", "deferred", "failed", "dsn", "held", "released", "deleted"}

// DefaultWebhookEvents are posted when a [[webhook]] has no events key.
var DefaultWebhookEvents = []string{"delivered", "deferred", "failed", "dsn", "held"}

// Per-entry defaults of [[webhook]] (an array of tables has no entry in
// defaults.toml to inherit from).
const (
	defaultWebhookTimeout     = 10 * time.Second
	defaultWebhookRetryMin    = time.Second
	defaultWebhookRetryMax    = 5 * time.Minute
	defaultWebhookLifetime    = 120 * time.Hour
	defaultWebhookConcurrency = 4
)

type fileWebhook struct {
	Name        string   `toml:"name"`
	URL         string   `toml:"url"`
	Events      []string `toml:"events"`
	SecretFile  string   `toml:"secret_file"`
	Timeout     string   `toml:"timeout"`
	RetryMin    string   `toml:"retry_min"`
	RetryMax    string   `toml:"retry_max"`
	Lifetime    string   `toml:"lifetime"`
	Concurrency int64    `toml:"concurrency"`
}

var webhookName = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// webhooks checks the [[webhook]] entries; secret files are resolved
// against data_dir by build.
func (v *validator) webhooks(c *Config, fc *fileConfig) {
	names := map[string]int{}
	for i, w := range fc.Webhook {
		at := func(key string) []string { return p("webhook", indexPart(i), key) }
		set := func(key string) bool { return v.inFile("webhook", indexPart(i), key) }
		var h Webhook
		h.URL = strings.TrimSpace(w.URL)
		if u, err := url.Parse(h.URL); h.URL == "" {
			v.errorf(at("url"), "missing")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errorf(at("url"), "invalid URL %q (want http://host[:port]/path or https://...)", w.URL)
		}
		h.Name = strings.TrimSpace(w.Name)
		if !set("name") {
			h.Name = "hook-" + webhookHash(h.URL)
		} else if !webhookName.MatchString(h.Name) {
			v.errorf(at("name"), "invalid name %q (want 1 to 64 of a-z 0-9 . _ -)", w.Name)
		}
		if j, dup := names[h.Name]; dup {
			v.errorf(at("name"), "webhook[%d] has the same name %q (set name to tell them apart)", j, h.Name)
		}
		names[h.Name] = i
		h.Events = DefaultWebhookEvents
		if set("events") {
			h.Events = nil
			if len(w.Events) == 0 {
				v.errorf(at("events"), "is empty (want some of %s)", strings.Join(WebhookEvents, ", "))
			}
			for j, e := range w.Events {
				e = strings.ToLower(strings.TrimSpace(e))
				switch {
				case !slices.Contains(WebhookEvents, e):
					v.errorf(elem(at("events"), j), "unknown event %q (want one of %s)", w.Events[j], strings.Join(WebhookEvents, ", "))
				case !slices.Contains(h.Events, e):
					h.Events = append(h.Events, e)
				}
			}
		}
		h.SecretFile = strings.TrimSpace(w.SecretFile)
		dur := func(key, raw string, def, lo time.Duration) time.Duration {
			if !set(key) {
				return def
			}
			return v.duration(at(key), raw, lo)
		}
		h.Timeout = dur("timeout", w.Timeout, defaultWebhookTimeout, 1)
		h.RetryMin = dur("retry_min", w.RetryMin, defaultWebhookRetryMin, 1)
		h.RetryMax = dur("retry_max", w.RetryMax, defaultWebhookRetryMax, 1)
		if h.RetryMin > h.RetryMax {
			v.errorf(at("retry_max"), "%v is less than retry_min %v", h.RetryMax, h.RetryMin)
		}
		h.Lifetime = dur("lifetime", w.Lifetime, defaultWebhookLifetime, 0)
		h.Concurrency = defaultWebhookConcurrency
		if set("concurrency") {
			h.Concurrency = v.count(at("concurrency"), w.Concurrency, 1)
		}
		c.Webhooks = append(c.Webhooks, h)
	}
}

// webhookHash names a webhook by its URL: 8 hex digits of its SHA-256.
func webhookHash(u string) string {
	sum := sha256.Sum256([]byte(u))
	return hex.EncodeToString(sum[:4])
}
