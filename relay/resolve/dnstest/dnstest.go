// Package dnstest runs a real DNS resolver for tests: Debian's unbound,
// serving zones the test writes (as local auth-zones) and validating those
// the test signs (with ldns-signzone, the trust anchor given to unbound),
// so that answers carry the AD bit exactly as a validating resolver on
// loopback gives it in production. Tests skip with a message naming the
// package to install when unbound or ldnsutils is missing.
//
// Nothing is ever asked of the Internet: the root zone itself is a local
// auth-zone, so a name outside the test's zones is NXDOMAIN at once.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is one zone the resolver serves.
type Zone struct {
	// Name is the zone's apex, "example.test".
	Name string
	// Records are zone file lines after the SOA and NS records the harness
	// writes; names are relative to the apex ("@", "mx1", or absolute
	// with a dot at the end), e.g. "@ MX 10 mx1", "mx1 A 127.0.26.5".
	Records []string
	// Signed signs the zone and gives unbound its key as a trust anchor:
	// its answers are then validated (AD set).
	Signed bool
	// A zone may lie inside another of the test's zones: it is then
	// delegated from it, insecurely (no DS).
	//
	// Bogus gives unbound a trust anchor that the zone (unsigned) cannot
	// meet, so every answer from it fails validation: SERVFAIL, as a
	// broken DNSSEC zone on the Internet gives.
	Bogus bool
}

// Server is a running unbound.
type Server struct {
	// Addr is "ip:port" to put in [dns] servers.
	Addr string
	dir  string
}

// Start runs unbound on ip (a free port) serving zones until the test
// ends.
func Start(t testing.TB, ip string, zones ...Zone) *Server {
	t.Helper()
	bin, err := exec.LookPath("unbound")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/unbound"); err2 != nil {
			t.Skip("unbound is not installed (apt-get install unbound): no real DNS server to test against")
		}
		bin = "/usr/sbin/unbound"
	}
	dir := t.TempDir()
	s := &Server{Addr: freePort(t, ip), dir: dir}
	host, port, _ := net.SplitHostPort(s.Addr)

	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	interface: %s
	port: %s
	do-ip6: no
	do-daemonize: no
	chroot: ""
	username: ""
	directory: "%s"
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 1
	val-log-level: 2
	access-control: 127.0.0.0/8 allow
	module-config: "validator iterator"
	cache-max-ttl: 0
	cache-max-negative-ttl: 0
	serve-expired: no
	# No network: every answer comes from the auth-zones below.
	do-not-query-localhost: yes
	# Special-use names (RFC 6761) that unbound answers itself by default.
	local-zone: "test." nodefault
	local-zone: "invalid." nodefault
`, host, port, dir)
	// The root zone delegates each test zone; unbound then answers from
	// that zone's own auth-zone instead of asking the (absent) server.
	// A zone inside another of the test's zones is delegated from that
	// one (without a DS: an insecure delegation, unless the zone has a
	// trust anchor of its own).
	zones = slices.Clone(zones)
	root := Zone{Name: "."}
	for _, z := range zones {
		parent := &root
		for i := range zones {
			if p := fqdn(zones[i].Name); strings.HasSuffix(fqdn(z.Name), "."+p) && (parent == &root || len(p) > len(fqdn(parent.Name))) {
				parent = &zones[i]
			}
		}
		parent.Records = append(slices.Clone(parent.Records), fmt.Sprintf("%s NS ns.%s", fqdn(z.Name), fqdn(z.Name)), fmt.Sprintf("ns.%s A 127.0.26.254", fqdn(z.Name)))
	}
	var auth strings.Builder
	for _, z := range append([]Zone{root}, zones...) {
		file := s.writeZone(t, z)
		switch {
		case z.Signed:
			file = s.sign(t, z, file, &conf)
		case z.Bogus:
			// A DS no key of the (unsigned) zone matches.
			fmt.Fprintf(&conf, "\ttrust-anchor: \"%s DS 12345 13 2 %s\"\n", fqdn(z.Name), strings.Repeat("ab", 32))
		}
		fmt.Fprintf(&auth, "auth-zone:\n\tname: \"%s\"\n\tzonefile: \"%s\"\n\tfor-downstream: no\n\tfor-upstream: yes\n\tfallback-enabled: no\n", fqdn(z.Name), file)
	}
	conf.WriteString(auth.String())
	confPath := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "unbound.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unbound: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("unbound log:\n%s", b)
		}
	})
	// Ready when it answers for the root zone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion(".", dns.TypeSOA)
		c := &dns.Client{Timeout: 200 * time.Millisecond}
		if r, _, err := c.ExchangeContext(context.Background(), m, s.Addr); err == nil && r.Rcode == dns.RcodeSuccess {
			return s
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("unbound exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("unbound did not answer on %s within 10s:\n%s", s.Addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fqdn(name string) string {
	if name == "." {
		return "."
	}
	return strings.TrimSuffix(name, ".") + "."
}

// writeZone writes z as a zone file with an SOA and an NS record.
func (s *Server) writeZone(t testing.TB, z Zone) string {
	t.Helper()
	origin := fqdn(z.Name)
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n", origin)
	ns := "ns." + strings.TrimPrefix(origin, ".")
	fmt.Fprintf(&b, "@ SOA %s hostmaster.%s 1 3600 600 86400 60\n", ns, strings.TrimPrefix(origin, "."))
	fmt.Fprintf(&b, "@ NS %s\n", ns)
	if z.Name != "." {
		fmt.Fprintf(&b, "%s A 127.0.26.254\n", ns)
	}
	for _, r := range z.Records {
		b.WriteString(r + "\n")
	}
	name := "root"
	if z.Name != "." {
		name = strings.TrimSuffix(z.Name, ".")
	}
	path := filepath.Join(s.dir, name+".zone")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// sign signs the zone file with a new ECDSA P-256 key (ldns-keygen,
// ldns-signzone) and adds the key to conf as a trust anchor. It returns the
// signed file.
func (s *Server) sign(t testing.TB, z Zone, file string, conf *strings.Builder) string {
	t.Helper()
	for _, tool := range []string{"ldns-keygen", "ldns-signzone"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install ldnsutils): cannot sign a test zone", tool)
		}
	}
	keygen := exec.Command("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", fqdn(z.Name))
	keygen.Dir = s.dir
	out, err := keygen.Output()
	if err != nil {
		t.Fatalf("ldns-keygen: %v", err)
	}
	key := strings.TrimSpace(string(out)) // the base name, "Kdane.test.+013+12345"
	sign := exec.Command("ldns-signzone", "-n", file, key)
	sign.Dir = s.dir
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("ldns-signzone: %v\n%s", err, out)
	}
	fmt.Fprintf(conf, "\ttrust-anchor-file: \"%s\"\n", filepath.Join(s.dir, key+".key"))
	return file + ".signed"
}

// freePort finds a port free for both UDP and TCP on ip.
func freePort(t testing.TB, ip string) string {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			t.Fatalf("listen on %s: %v", ip, err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatalf("no free port on %s", ip)
	return ""
}
