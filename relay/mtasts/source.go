package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Resolver is what discovery and the policy fetch need of DNS.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Cache keeps fetched policies across restarts (the spool does, under
// p/<domain>). Load returns nil, nil when there is none.
type Cache interface {
	LoadPolicy(domain string) ([]byte, error)
	StorePolicy(domain string, value []byte, ttl time.Duration) error
}

// Limits of the policy fetch (RFC 8461 §3.3 asks for both, and suggests
// 64 KiB; a minute is generous for a file that small).
const (
	MaxPolicySize = 64 << 10
	FetchTimeout  = 60 * time.Second
)

// Source gives the MTA-STS policy of a domain: from the cache while its
// TXT record announces the same id and it has not expired, else fetched.
type Source struct {
	Resolver Resolver
	Cache    Cache // nil: fetch every time
	// RootCAs verify policy hosts; nil: the system's.
	RootCAs *x509.CertPool
	// Port is the HTTPS port of policy hosts: 443 (RFC 8461); tests on
	// loopback use another.
	Port   int
	Now    func() time.Time
	Logger *slog.Logger
	// FetchFailed, when set, hears of each announced policy that could
	// not be fetched (for TLS-RPT's sts-policy-fetch-error, or
	// sts-policy-invalid when IsInvalid(err)).
	FetchFailed func(domain string, err error)
}

// ErrInvalid marks a policy that was fetched but does not parse.
var ErrInvalid = errors.New("invalid MTA-STS policy")

// Policy returns domain's policy, or nil when it has none that applies.
// Following RFC 8461 §5.1, a domain whose TXT record or policy cannot be
// had (DNS failure, HTTPS failure, invalid policy) has no policy, unless
// an unexpired one is cached, which then stays in force. Errors are only
// reported through the logger: a policy that cannot be fetched never
// defers mail on its own.
func (s *Source) Policy(ctx context.Context, domain string) *Policy {
	now := s.now()
	cached := s.load(domain, now)
	txt, err := s.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	var id string
	if err == nil {
		id, err = ParseTXT(txt)
	}
	if err != nil {
		// No record (or a broken one): a cached policy stays until it
		// expires, so that removing the record cannot downgrade.
		if cached != nil {
			return s.applies(cached)
		}
		return nil
	}
	if cached != nil && cached.ID == id {
		return s.applies(cached)
	}
	p, err := s.Fetch(ctx, domain)
	if err != nil {
		s.logger().Info("mta-sts: policy fetch failed", "domain", domain, "err", err)
		if s.FetchFailed != nil {
			s.FetchFailed(domain, err)
		}
		if cached != nil {
			return s.applies(cached)
		}
		return nil
	}
	p.ID, p.Fetched = id, now
	s.store(domain, p)
	return s.applies(p)
}

func (s *Source) applies(p *Policy) *Policy {
	if p.Mode == None {
		return nil
	}
	return p
}

// URL is where domain's policy is fetched.
func (s *Source) URL(domain string) string {
	host := "mta-sts." + domain
	if s.Port != 0 && s.Port != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(s.Port))
	}
	return "https://" + host + "/.well-known/mta-sts.txt"
}

// Fetch gets and parses domain's policy over HTTPS: verified TLS, no
// redirects (RFC 8461 §3.3), status 200, text/plain, at most
// MaxPolicySize bytes, within FetchTimeout.
func (s *Source) Fetch(ctx context.Context, domain string) (*Policy, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	dialer := &net.Dialer{}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12},
			// Names are resolved by the relay's resolver, like every
			// other lookup it makes.
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				ips, err := s.Resolver.LookupHost(ctx, host)
				if err != nil {
					return nil, err
				}
				var last error
				for _, ip := range ips {
					c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
					if err == nil {
						return c, nil
					}
					last = err
				}
				return nil, last
			},
			Proxy:             nil,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed (RFC 8461 §3.3)")
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(domain), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP status %s", req.URL, resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("%s: content type %q is not text/plain", req.URL, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.URL, err)
	}
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("%s: policy larger than %d bytes", req.URL, MaxPolicySize)
	}
	p, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", req.URL, ErrInvalid, err)
	}
	return p, nil
}

func (s *Source) load(domain string, now time.Time) *Policy {
	if s.Cache == nil {
		return nil
	}
	b, err := s.Cache.LoadPolicy(domain)
	if err != nil {
		s.logger().Warn("mta-sts: read cached policy", "domain", domain, "err", err)
		return nil
	}
	if b == nil {
		return nil
	}
	var p Policy
	if err := json.Unmarshal(b, &p); err != nil {
		s.logger().Warn("mta-sts: cached policy unreadable", "domain", domain, "err", err)
		return nil
	}
	if !now.Before(p.Expires()) {
		return nil
	}
	return &p
}

func (s *Source) store(domain string, p *Policy) {
	if s.Cache == nil || p.MaxAge <= 0 {
		return
	}
	b, err := json.Marshal(p)
	if err == nil {
		err = s.Cache.StorePolicy(domain, b, p.MaxAge)
	}
	if err != nil {
		s.logger().Warn("mta-sts: cache policy", "domain", domain, "err", err)
	}
}

func (s *Source) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Source) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}
