package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// eximTarget is Debian's exim4-daemon-light (extracted, not installed: see
// debRoot) as a pure relay, with a configuration of its own instead of
// Debian's: it accepts mail for sink.test from 127.0.0.0/8 and routes it
// with a manualroute router to the sink's address, plain SMTP, no DNS, no
// local delivery. Everything else is Exim's default, fsync included
// (disable_fsync = false): delivery starts at once in a process of its
// own for each message received, also after the tenth message of one
// connection (smtp_accept_queue_per_connection = 0; by default Exim queues
// those for the next queue run, which -reuse would wait for). It runs as
// `exim4 -C config -bdf -q30m` (Debian's queue interval) in a private
// namespace that adds the Debian-exim user and lists the configuration in
// /etc/exim4/trusted_configs (so that Exim keeps its privileges with -C).
type eximTarget struct {
	dir, addr string
	conf      string
	spool     string
	uid       int
	ns        *privateNS
	version   string
}

func setupExim(ctx context.Context, cache, base, addr, sinkAddr string) (*eximTarget, error) {
	root, versions, err := debRoot(ctx, cache, "exim4-base", "exim4-config", "exim4-daemon-light", "libidn12")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "exim")
	t := &eximTarget{dir: dir, addr: addr, conf: filepath.Join(dir, "exim.conf"), spool: filepath.Join(dir, "spool"),
		version: versions["exim4-daemon-light"]}
	passwd, group, ids, err := nsUsers("Debian-exim")
	if err != nil {
		return nil, err
	}
	t.uid = ids["Debian-exim"]
	t.ns = &privateNS{dir: dir, usr: root, etc: map[string]string{
		"passwd": passwd, "group": group,
		"exim4/trusted_configs": t.conf + "\n",
	}}
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(filepath.Join(dir, "log"), t.uid, t.uid); err != nil {
		return nil, err
	}
	ip, port, _ := net.SplitHostPort(addr)
	sinkIP, sinkPort, _ := net.SplitHostPort(sinkAddr)
	// Exim refuses a -C file that is not root's or that others may write.
	if err := os.WriteFile(t.conf, []byte(eximConfig(dir, t.spool, ip, port, sinkIP, sinkPort)), 0o644); err != nil {
		return nil, err
	}
	return t, nil
}

func eximConfig(dir, spool, ip, port, sinkIP, sinkPort string) string {
	return fmt.Sprintf(`# relay-bench: Exim as a pure relay of sink.test to %[4]s port %[5]s.
# Defaults otherwise (fsync included); no TLS, no DNS, no local delivery.
exim_path = /usr/sbin/exim4
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = %[2]s
log_file_path = %[1]s/log/%%slog
pid_file_path = %[1]s/exim.pid
primary_hostname = exim.bench.test
qualify_domain = exim.bench.test
local_interfaces = %[3]s
daemon_smtp_ports = %[6]s
domainlist local_domains =
domainlist relay_to_domains = %[7]s
hostlist relay_from_hosts = 127.0.0.0/8
acl_smtp_rcpt = acl_check_rcpt
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
never_users = root
keep_environment =
# the load's parallel sessions (up to 100) must not meet the connection limits
smtp_accept_max = 1000
smtp_connect_backlog = 1024
# deliver every message at once, not only a connection's first 10
smtp_accept_queue_per_connection = 0

begin acl
acl_check_rcpt:
  accept  hosts   = +relay_from_hosts
          domains = +relay_to_domains
  deny    message = relay not permitted

begin routers
to_sink:
  driver = manualroute
  domains = +relay_to_domains
  transport = remote_smtp
  route_list = * %[4]s
  no_more

begin transports
remote_smtp:
  driver = smtp
  port = %[5]s
  hosts_avoid_tls = *

begin retry
*  *  F,2h,1m; G,16h,1h,1.5; F,4d,6h
`, dir, spool, ip, sinkIP, sinkPort, port, sinkDomain)
}

func (t *eximTarget) Name() string { return "exim" }

func (t *eximTarget) Version() string { return "Exim " + t.version }

func (t *eximTarget) Start(ctx context.Context, _ *sink, g *group) (instance, error) {
	if err := os.RemoveAll(t.spool); err != nil { // an empty queue
		return nil, err
	}
	if err := os.Mkdir(t.spool, 0o750); err != nil {
		return nil, err
	}
	if err := os.Chown(t.spool, t.uid, t.uid); err != nil {
		return nil, err
	}
	cmd, err := t.ns.command("/usr/sbin/exim4", "-C", t.conf, "-bdf", "-q30m")
	if err != nil {
		return nil, err
	}
	return startDaemon(ctx, "exim", g, cmd, t.addr, filepath.Join(t.dir, "log", "daemon.log"))
}
