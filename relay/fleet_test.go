package relay

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/internal/redistest"
	"github.com/relay-mta/relay/queue/ratelimit"
)

// TestFleetRedisPassword: [fleet] redis_password_file logs in to a Redis
// that requires a password; a wrong one leaves the relay limiting on its
// own (relay_fleet_redis_up 0), and a file others may read stops the
// start naming the key.
func TestFleetRedisPassword(t *testing.T) {
	srv := redistest.Start(t, "127.0.31.1", "--requirepass", "s3cret")
	rate := ratelimit.Rate{N: 10, Per: time.Second}
	for _, c := range []struct {
		name, password string
		up             bool
	}{{"right password", "s3cret", true}, {"wrong password", "guess", false}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Fleet.Redis, cfg.Fleet.RedisKeyPrefix = srv.Addr, "pw-test:"
			cfg.Fleet.RedisPasswordFile = filepath.Join(cfg.DataDir, "redis.pw")
			if err := os.WriteFile(cfg.Fleet.RedisPasswordFile, []byte(c.password+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.spool.Close()
			defer r.shared.Close()
			for range 2 {
				if _, err := r.shared.Reserve(context.Background(), c.name, rate); err != nil {
					t.Fatal(err)
				}
			}
			rec := httptest.NewRecorder()
			r.ops.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			want := "relay_fleet_redis_up 0"
			if c.up {
				want = "relay_fleet_redis_up 1"
			}
			if !strings.Contains(rec.Body.String(), want) {
				t.Errorf("metrics lack %q:\n%s", want, grepLines(rec.Body.String(), "relay_fleet_redis_up", "relay_rate_limit_local_fallbacks_total"))
			}
		})
	}

	cfg := testConfig(t)
	cfg.Fleet.Redis = srv.Addr
	cfg.Fleet.RedisPasswordFile = filepath.Join(cfg.DataDir, "redis.pw")
	if err := os.WriteFile(cfg.Fleet.RedisPasswordFile, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "fleet.redis_password_file") || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("New with a password file others may read: %v", err)
	}
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
