package config

import (
	"net"
	"strconv"
	"strings"
)

// Fleet is the [fleet] table: what the relays of a fleet share.
type Fleet struct {
	// Redis (redis) is the "host:port" of the Redis through which the
	// relays share their max_message_rate limits (design §15); "": each
	// relay limits on its own.
	Redis string
	// RedisPasswordFile (redis_password_file) is the absolute path of a
	// file whose first line is Redis's password (AUTH); "": none.
	RedisPasswordFile string
	// RedisDB (redis_db) is the Redis database number (SELECT).
	RedisDB int
	// RedisKeyPrefix (redis_key_prefix) starts every key the relay sets,
	// so that fleets sharing one Redis keep apart.
	RedisKeyPrefix string
}

type fileFleet struct {
	Redis             string `toml:"redis"`
	RedisPasswordFile string `toml:"redis_password_file"`
	RedisDB           int64  `toml:"redis_db"`
	RedisKeyPrefix    string `toml:"redis_key_prefix"`
}

// fleet checks [fleet]; redis_password_file is resolved against data_dir
// with the other paths.
func (v *validator) fleet(c *Config, fc *fileConfig) {
	f := &fc.Fleet
	c.Fleet.Redis = strings.TrimSpace(f.Redis)
	if a := c.Fleet.Redis; a != "" {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || host == "":
			v.errorf(p("fleet", "redis"), "%q is not host:port (Redis's address, e.g. \"127.0.0.1:6379\")", a)
		case perr != nil || n < 1 || n > 65535:
			v.errorf(p("fleet", "redis"), "%q: %q is not a port", a, port)
		case !validDomain(normDomain(host)) && net.ParseIP(host) == nil:
			v.errorf(p("fleet", "redis"), "%q: %q is not a host name or an IP address", a, host)
		}
	}
	c.Fleet.RedisPasswordFile = strings.TrimSpace(f.RedisPasswordFile)
	if c.Fleet.RedisPasswordFile != "" && c.Fleet.Redis == "" {
		v.errorf(p("fleet", "redis_password_file"), "is set but fleet.redis is not")
	}
	c.Fleet.RedisDB = v.count(p("fleet", "redis_db"), f.RedisDB, 0)
	c.Fleet.RedisKeyPrefix = f.RedisKeyPrefix
	if strings.ContainsAny(c.Fleet.RedisKeyPrefix, " \t\r\n") {
		v.errorf(p("fleet", "redis_key_prefix"), "%q contains white space", c.Fleet.RedisKeyPrefix)
	}
}
