package resolve_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/resolve"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// The resolver against a real unbound: records, NXDOMAIN and NODATA told
// apart, SERVFAIL temporary, and the AD bit only on a validated zone.
func TestAgainstUnbound(t *testing.T) {
	srv := dnstest.Start(t, "127.0.26.1",
		dnstest.Zone{Name: "plain.test", Records: []string{
			"@ MX 10 mx1", "@ MX 20 mx2.other.test.", "mx1 A 127.0.26.5", "mx1 AAAA ::1",
			"alias CNAME mx1", "txt TXT \"v=DKIM1; \" \"p=abc\"", "nomx A 127.0.26.6",
		}},
		dnstest.Zone{Name: "signed.test", Signed: true, Records: []string{
			"@ MX 10 mx", "mx A 127.0.26.7", "_25._tcp.mx TLSA 3 1 1 " + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		}},
		dnstest.Zone{Name: "bogus.test", Bogus: true, Records: []string{"@ MX 10 mx", "mx A 127.0.26.8"}},
		// A bogus zone cut inside the signed zone: its TLSA lookups fail
		// while the rest of signed.test validates.
		dnstest.Zone{Name: "_25._tcp.broken.signed.test", Bogus: true, Records: []string{"@ TLSA 3 1 1 " + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}},
	)
	r, err := resolve.New(resolve.Options{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	mxs, secure, err := r.LookupMXSecure(ctx, "plain.test")
	if err != nil || len(mxs) != 2 || secure {
		t.Fatalf("MX plain.test = %v, secure %v, %v", mxs, secure, err)
	}
	hosts := []string{mxs[0].Host, mxs[1].Host}
	slices.Sort(hosts)
	if hosts[0] != "mx1.plain.test." || hosts[1] != "mx2.other.test." {
		t.Errorf("MX hosts %v", hosts)
	}
	if ips, err := r.LookupHost(ctx, "mx1.plain.test"); err != nil || !slices.Equal(ips, []string{"127.0.26.5", "::1"}) {
		t.Errorf("LookupHost mx1 = %v, %v", ips, err)
	}
	if ips, err := r.LookupHost(ctx, "alias.plain.test"); err != nil || ips[0] != "127.0.26.5" {
		t.Errorf("LookupHost through a CNAME = %v, %v", ips, err)
	}
	if txt, err := r.LookupTXT(ctx, "txt.plain.test"); err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; p=abc" {
		t.Errorf("TXT = %q, %v", txt, err)
	}

	// NODATA: the name exists, without MX.
	_, err = r.LookupMX(ctx, "nomx.plain.test")
	if !notFound(err) || resolve.IsNXDomain(err) {
		t.Errorf("MX of a name with only A: %v (want not found, not NXDOMAIN)", err)
	}
	// NXDOMAIN, in a test zone and outside every zone.
	for _, name := range []string{"nosuch.plain.test", "nowhere.invalid"} {
		if _, err := r.LookupMX(ctx, name); !resolve.IsNXDomain(err) {
			t.Errorf("MX %s: %v, want NXDOMAIN", name, err)
		}
		if _, err := r.LookupHost(ctx, name); !resolve.IsNXDomain(err) {
			t.Errorf("host %s: %v, want NXDOMAIN", name, err)
		}
	}

	// A validated zone: AD set on records and on the TLSA answer.
	mxs, secure, err = r.LookupMXSecure(ctx, "signed.test")
	if err != nil || len(mxs) != 1 || !secure {
		t.Fatalf("MX signed.test = %v, secure %v, %v", mxs, secure, err)
	}
	tlsa, secure, err := r.LookupTLSA(ctx, "_25._tcp.mx.signed.test")
	if err != nil || len(tlsa) != 1 || !secure || tlsa[0].Usage != 3 || tlsa[0].Selector != 1 || tlsa[0].MatchingType != 1 {
		t.Fatalf("TLSA = %v, secure %v, %v", tlsa, secure, err)
	}
	// An authenticated denial: no TLSA, and secure.
	if _, secure, err := r.LookupTLSA(ctx, "_25._tcp.nosuch.signed.test"); !notFound(err) || !secure {
		t.Errorf("missing TLSA in a signed zone: secure %v, %v", secure, err)
	}

	if _, _, err := r.LookupTLSA(ctx, "_25._tcp.broken.signed.test"); !temporary(err) {
		t.Errorf("TLSA in a bogus zone cut: %v, want a temporary error", err)
	}

	// A zone that fails validation: SERVFAIL, which is temporary.
	start := time.Now()
	_, err = r.LookupMX(ctx, "bogus.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Fatalf("MX of a bogus zone: %v, want a temporary error", err)
	}
	t.Logf("bogus zone: %v after %v", err, time.Since(start))
}

// Timeouts against a server that does not answer are temporary, and
// bounded by timeout × attempts.
func TestNoServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.26.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, err := resolve.New(resolve.Options{Servers: []string{pc.LocalAddr().String()}, Timeout: 200 * time.Millisecond, Attempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = r.LookupMX(context.Background(), "example.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || !de.IsTimeout {
		t.Fatalf("got %v, want a temporary timeout", err)
	}
	if d := time.Since(start); d < 350*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v for 2 attempts of 200ms", d)
	}
}

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.53": "127.0.0.53:53", "127.0.0.1:5353": "127.0.0.1:5353", "::1": "[::1]:53", "[::1]:54": "[::1]:54"} {
		if got, err := resolve.ServerAddr(in); err != nil || got != want {
			t.Errorf("ServerAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "dns.example", "127.0.0.1:x"} {
		if _, err := resolve.ServerAddr(bad); err == nil {
			t.Errorf("ServerAddr(%q) accepted", bad)
		}
	}
}

func temporary(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsTemporary && !de.IsNotFound
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
