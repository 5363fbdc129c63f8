package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/internal/testca"
)

type fakeDNS struct {
	mu  sync.Mutex
	txt map[string][]string
}

func (f *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.txt[name]; ok {
		return t, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupHost(_ context.Context, host string) ([]string, error) {
	if strings.HasPrefix(host, "mta-sts.") {
		return []string{"127.0.26.3"}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f *fakeDNS) set(name string, recs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if recs == nil {
		delete(f.txt, name)
	} else {
		f.txt[name] = recs
	}
}

type memCache map[string][]byte

func (m memCache) LoadPolicy(d string) ([]byte, error) { return m[d], nil }
func (m memCache) StorePolicy(d string, v []byte, _ time.Duration) error {
	m[d] = v
	return nil
}

// A policy server on 127.0.26.3 whose answers the test sets, with a
// certificate for mta-sts.*.test from a CA the Source trusts.
func TestSource(t *testing.T) {
	ca := testca.New(t)
	srv := ca.Issue(t, "mta-sts.a.test", "mta-sts.b.test")
	roots := ca.Pool()

	var mu sync.Mutex
	body, ctype, status, fetches := "", "text/plain", 200, 0
	serve := func(b string) { mu.Lock(); body, ctype, status = b, "text/plain", 200; mu.Unlock() }
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		if status == http.StatusFound {
			http.Redirect(w, r, "https://mta-sts.a.test/elsewhere", status)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	l, err := net.Listen("tcp", "127.0.26.3:0")
	if err != nil {
		t.Fatal(err)
	}
	hs.Listener = l
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{srv.TLS}}
	hs.StartTLS()
	defer hs.Close()
	port, _ := strconv.Atoi(strings.Split(l.Addr().String(), ":")[1])

	dns := &fakeDNS{txt: map[string][]string{}}
	now := time.Unix(2e9, 0)
	cache := memCache{}
	var failures []error
	s := &Source{Resolver: dns, Cache: cache, RootCAs: roots, Port: port, Now: func() time.Time { return now },
		FetchFailed: func(_ string, err error) { failures = append(failures, err) }}
	ctx := context.Background()
	enforce := "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 3600\n"
	fetched := func() int { mu.Lock(); defer mu.Unlock(); return fetches }

	// No TXT record: no policy, no fetch.
	if p := s.Policy(ctx, "a.test"); p != nil || fetched() != 0 {
		t.Fatalf("without TXT: %+v, %d fetches", p, fetched())
	}
	dns.set("_mta-sts.a.test", "v=STSv1; id=1")
	serve(enforce)
	if p := s.Policy(ctx, "a.test"); p == nil || p.Mode != Enforce || !p.Matches("mx.a.test") || p.ID != "1" || fetched() != 1 {
		t.Fatalf("first: %+v, %d fetches", p, fetched())
	}
	// Same id: from the cache.
	if p := s.Policy(ctx, "a.test"); p == nil || fetched() != 1 {
		t.Fatalf("cached: %+v, %d fetches", p, fetched())
	}
	// A new id: fetched again.
	dns.set("_mta-sts.a.test", "v=STSv1; id=2")
	serve(strings.Replace(enforce, "mx.a.test", "mx2.a.test", 1))
	if p := s.Policy(ctx, "a.test"); p == nil || !p.Matches("mx2.a.test") || fetched() != 2 {
		t.Fatalf("new id: %+v, %d fetches", p, fetched())
	}
	// The record removed, or the server broken: the cached policy stays
	// in force until it expires, so neither can downgrade.
	dns.set("_mta-sts.a.test")
	if p := s.Policy(ctx, "a.test"); p == nil || !p.Matches("mx2.a.test") {
		t.Fatalf("TXT gone: %+v", p)
	}
	dns.set("_mta-sts.a.test", "v=STSv1; id=3")
	serve("garbage")
	if p := s.Policy(ctx, "a.test"); p == nil || !p.Matches("mx2.a.test") {
		t.Fatalf("invalid new policy: %+v", p)
	}
	if len(failures) != 1 || !errors.Is(failures[0], ErrInvalid) {
		t.Errorf("fetch failures reported: %v, want one invalid policy", failures)
	}
	now = now.Add(2 * time.Hour)
	if p := s.Policy(ctx, "a.test"); p != nil {
		t.Fatalf("expired and unfetchable: %+v", p)
	}

	// Fetch failures without a cached policy: no policy.
	dns.set("_mta-sts.b.test", "v=STSv1; id=1")
	for name, set := range map[string]func(){
		"redirect":     func() { mu.Lock(); status = http.StatusFound; mu.Unlock() },
		"404":          func() { mu.Lock(); status = 404; mu.Unlock() },
		"content type": func() { serve(enforce); mu.Lock(); ctype = "text/html"; mu.Unlock() },
		"too large":    func() { serve(enforce + strings.Repeat("x: y\n", MaxPolicySize/5+1)) },
		"mode none":    func() { serve("version: STSv1\nmode: none\nmax_age: 60\n") },
		"untrusted CA": func() { serve(enforce); s.RootCAs = x509.NewCertPool() },
		"not TLS 1.2+": func() { serve(enforce); s.RootCAs = roots; hs.TLS.MaxVersion = tls.VersionTLS11 },
	} {
		delete(cache, "b.test")
		set()
		if p := s.Policy(ctx, "b.test"); p != nil {
			t.Errorf("%s: got policy %+v", name, p)
		}
		s.RootCAs = roots
	}
	if got := s.URL("a.test"); got != fmt.Sprintf("https://mta-sts.a.test:%d/.well-known/mta-sts.txt", port) {
		t.Errorf("URL %s", got)
	}
	if got := (&Source{Port: 443}).URL("a.test"); got != "https://mta-sts.a.test/.well-known/mta-sts.txt" {
		t.Errorf("URL %s", got)
	}
}
