package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/relay-mta/relay/relay"
)

// chasquidForward is the domain chasquid's aliases forward to; the run's
// DNS server gives it an MX pointing at the sink.
const chasquidForward = "relayed.test"

// chasquidTarget is Debian's chasquid, which relays only for clients that
// authenticate (smtp-source cannot) and delivers remote mail by MX lookup
// only. So it is set up as the nearest store-and-forward equivalent of a
// relay: sink.test is one of its local domains, whose aliases forward
// every address to the same user at relayed.test (each recipient to an
// address of its own, so that chasquid delivers each one, as it does any
// message, in a transaction of its own); relayed.test's MX is the sink's
// address, served by a DNS server of the run that chasquid's private
// namespace names in its resolv.conf. Its outgoing port is the sink's
// (-testing__outgoing_smtp_port; chasquid has no other way to send to a
// port other than 25). It gets a self-signed certificate (chasquid will
// not start without one) and defaults otherwise: it checks SPF for every
// sender (the run's DNS answers NXDOMAIN) and rewrites the envelope sender
// of forwarded mail (SRS).
type chasquidTarget struct {
	dir, addr string
	etc, data string
	sinkPort  string
	dns       *dnsServer
	ns        *privateNS
	version   string
}

// chasquidUnavailable says why chasquid cannot run here, or "".
func chasquidUnavailable() string {
	if os.Geteuid() != 0 {
		return "not running as root (chasquid's private namespace and the run's DNS server on port 53 need root)"
	}
	if _, err := os.Stat("/usr/bin/chasquid"); err != nil {
		return "/usr/bin/chasquid not found (apt-get install chasquid)"
	}
	return ""
}

func setupChasquid(ctx context.Context, base, addr, sinkAddr, dnsIP string, maxRcpts int) (*chasquidTarget, error) {
	dir := filepath.Join(base, "chasquid")
	sinkIP, sinkPort, _ := net.SplitHostPort(sinkAddr)
	t := &chasquidTarget{dir: dir, addr: addr, etc: filepath.Join(dir, "etc"), data: filepath.Join(dir, "data"), sinkPort: sinkPort}
	if out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", "chasquid").Output(); err == nil {
		t.version = strings.TrimSpace(string(out))
	}
	host := "chasquid.bench.test"
	certDir := filepath.Join(t.etc, "certs", host)
	domDir := filepath.Join(t.etc, "domains", sinkDomain)
	for _, d := range []string{certDir, domDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	ip, _, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`# relay-bench: chasquid forwarding every address of %[5]s to %[6]s (aliases)
hostname: %[1]q
smtp_address: "%[2]s"
submission_address: "%[3]s:2587"
submission_over_tls_address: "%[3]s:2465"
data_dir: %[4]q
mail_log_path: "%[7]s/mail.log"
`, host, addr, ip, t.data, sinkDomain, chasquidForward, dir)
	// smtp-source sends to u@ (one recipient) or 1u@ ... Nu@; the probe to probe1@ ... probeN@.
	aliases := "# relay-bench: forward each address to one of its own at " + chasquidForward + "\n"
	aliases += fmt.Sprintf("u: u@%s\n", chasquidForward)
	for i := 1; i <= maxRcpts; i++ {
		aliases += fmt.Sprintf("%[1]du: %[1]du@%[2]s\nprobe%[1]d: probe%[1]d@%[2]s\n", i, chasquidForward)
	}
	aliases += fmt.Sprintf("*: other@%s\n", chasquidForward)
	for name, text := range map[string]string{
		filepath.Join(t.etc, "chasquid.conf"): conf,
		filepath.Join(domDir, "aliases"):      aliases,
	} {
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	cert, key, err := relay.WriteSelfSigned(dir, host, nil)
	if err != nil {
		return nil, err
	}
	for link, file := range map[string]string{"fullchain.pem": cert, "privkey.pem": key} {
		if err := os.Symlink(file, filepath.Join(certDir, link)); err != nil {
			return nil, err
		}
	}
	t.dns, err = startDNS(dnsAddr(dnsIP), []string{
		fmt.Sprintf("%s. 60 IN MX 10 mx.%s.", chasquidForward, chasquidForward),
		fmt.Sprintf("mx.%s. 60 IN A %s", chasquidForward, sinkIP),
	})
	if err != nil {
		return nil, err
	}
	t.ns = &privateNS{dir: dir, etc: map[string]string{"resolv.conf": "# relay-bench: the run's DNS server\nnameserver " + dnsIP + "\n"}}
	return t, nil
}

func (t *chasquidTarget) Name() string { return "chasquid" }

func (t *chasquidTarget) Version() string { return "chasquid " + t.version }

// perRecipient: chasquid delivers each recipient in a transaction of its own.
func (t *chasquidTarget) perRecipient() {}

// Close stops the run's DNS server.
func (t *chasquidTarget) Close() { t.dns.close() }

func (t *chasquidTarget) Start(ctx context.Context, _ *sink, g *group) (instance, error) {
	if err := os.RemoveAll(t.data); err != nil { // an empty queue
		return nil, err
	}
	cmd, err := t.ns.command("/usr/bin/chasquid", "-config_dir", t.etc,
		"-testing__outgoing_smtp_port", t.sinkPort)
	if err != nil {
		return nil, err
	}
	d, err := startDaemon(ctx, "chasquid", g, cmd, t.addr, filepath.Join(t.dir, "chasquid.log"))
	if err != nil {
		return nil, err
	}
	d.stopStatus = 1 // "Got signal to exit: terminated", then exit(1)
	return d, nil
}
