package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// opensmtpdTarget is Debian's opensmtpd (extracted, not installed: see
// debRoot) as a pure relay: one listener, one action relaying sink.test to
// the sink's address over plain SMTP, defaults otherwise. It runs as
// `smtpd -d -f config` in a private namespace that adds its users
// (opensmtpd, opensmtpq) and mounts a fresh queue directory of the run at
// its compiled-in /var/spool/smtpd for each configuration.
type opensmtpdTarget struct {
	dir, addr string
	conf      string
	runs      int
	ns        *privateNS
	version   string
}

func setupOpenSMTPD(ctx context.Context, cache, base, addr, sinkAddr string) (*opensmtpdTarget, error) {
	root, versions, err := debRoot(ctx, cache, "opensmtpd")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "opensmtpd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	passwd, group, _, err := nsUsers("opensmtpd", "opensmtpq")
	if err != nil {
		return nil, err
	}
	t := &opensmtpdTarget{dir: dir, addr: addr, conf: filepath.Join(dir, "smtpd.conf"), version: versions["opensmtpd"]}
	t.ns = &privateNS{dir: dir, usr: root, etc: map[string]string{"passwd": passwd, "group": group},
		mkdirs: []string{"/var/lib/opensmtpd/empty"}}
	ip, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`# relay-bench: OpenSMTPD as a pure relay of %[4]s to the sink, plain SMTP, no DNS
# (the relay host is an address), no local delivery; defaults otherwise.
listen on %[1]s port %[2]s hostname opensmtpd.bench.test
action "relay" relay host smtp+notls://%[3]s
match from src 127.0.0.0/8 for domain %[4]s action "relay"
`, ip, port, sinkAddr, sinkDomain)
	if err := os.WriteFile(t.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *opensmtpdTarget) Name() string { return "opensmtpd" }

func (t *opensmtpdTarget) Version() string { return "OpenSMTPD " + t.version }

func (t *opensmtpdTarget) Start(ctx context.Context, _ *sink, g *group) (instance, error) {
	t.runs++
	spool := filepath.Join(t.dir, fmt.Sprintf("spool-%02d", t.runs)) // an empty queue
	// smtpd wants its queue root root's and 0711, as the package makes it.
	if err := os.Mkdir(spool, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(spool, 0o711); err != nil { // past the umask
		return nil, err
	}
	t.ns.binds = [][2]string{{spool, "/var/spool/smtpd"}}
	cmd, err := t.ns.command("/usr/sbin/smtpd", "-d", "-f", t.conf)
	if err != nil {
		return nil, err
	}
	return startDaemon(ctx, "opensmtpd", g, cmd, t.addr, filepath.Join(t.dir, "smtpd.log"))
}
