package relay

import (
	"fmt"

	"github.com/relay-mta/relay/queue/ratelimit"
	"github.com/relay-mta/relay/queue/ratelimit/redislimit"
)

// sharedLimiter is the rate limiter the fleet's relays share through
// Redis ([fleet] redis, design §15), or nil without one: the queue then
// limits with its own. Redis need not be up: until it is, the relay
// limits on its own.
func (r *Relay) sharedLimiter() (*redislimit.Limiter, error) {
	f := r.cfg.Fleet
	if f.Redis == "" {
		return nil, nil
	}
	var pw string
	if f.RedisPasswordFile != "" {
		var err error
		if pw, err = readPasswordFile(f.RedisPasswordFile); err != nil {
			return nil, fmt.Errorf("fleet.redis_password_file: %w", err)
		}
	}
	l := redislimit.New(redislimit.Options{
		Addr: f.Redis, Password: pw, DB: f.RedisDB, Prefix: f.RedisKeyPrefix,
		Local: ratelimit.NewLocal(r.now), Logger: r.log, Now: r.now,
	})
	r.log.Info("relay: rate limits shared through redis", "addr", f.Redis, "db", f.RedisDB, "prefix", f.RedisKeyPrefix)
	return l, nil
}
