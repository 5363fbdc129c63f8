package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// postfixTarget is a stock Postfix configured as a pure relay, as a private
// instance: its own config, queue and data directories under the run's temporary directory,
// sink.test routed to the sink, no chroot, no DNS, loopback only, no port-25
// listener. The system's Postfix is neither used nor touched. Each
// configuration starts the instance on an empty queue and stops it after.
type postfixTarget struct {
	dir, etc, spool, data string
	addr                  string
	maillog               string
}

// postfixUnavailable says why the Postfix target cannot run here, or "".
func postfixUnavailable() string {
	if os.Geteuid() != 0 {
		return "not running as root (a private Postfix instance needs root)"
	}
	for _, p := range []string{"/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/sbin/postmap", "/usr/share/postfix/master.cf.dist"} {
		if _, err := os.Stat(p); err != nil {
			return p + " not found (apt-get install postfix)"
		}
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return "no user postfix (apt-get install postfix)"
	}
	return ""
}

func setupPostfix(ctx context.Context, base, addr, sinkAddr string) (*postfixTarget, error) {
	dir := filepath.Join(base, "postfix")
	p := &postfixTarget{
		dir: dir, etc: filepath.Join(dir, "etc"), spool: filepath.Join(dir, "spool"), data: filepath.Join(dir, "data"),
		addr: addr, maillog: filepath.Join(dir, "maillog"),
	}
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	for _, d := range []string{p.etc, p.spool, p.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(p.data, uid, gid); err != nil {
		return nil, err
	}
	masterCF, err := os.ReadFile("/usr/share/postfix/master.cf.dist")
	if err != nil {
		return nil, err
	}
	sinkHost, sinkPort, _ := net.SplitHostPort(sinkAddr)
	files := map[string]string{
		"master.cf": string(masterCF),
		"main.cf":   postfixMainCF(p, addr),
		"transport": fmt.Sprintf("%s smtp:[%s]:%s\n", sinkDomain, sinkHost, sinkPort),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(p.etc, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	// Postfix commands run while postlogd is down append to the log themselves, as user postfix.
	if err := os.WriteFile(p.maillog, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Chown(p.maillog, uid, gid); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"postmap", "-c", p.etc, "hash:" + filepath.Join(p.etc, "transport")},
		{"postconf", "-c", p.etc, "-MX", "smtp/inet"}, // drop the port-25 listener
		{"postconf", "-c", p.etc, "-M", fmt.Sprintf("%s/inet=%s inet n - n - - smtpd", addr, addr)},
		{"postconf", "-c", p.etc, "-F", "*/*/chroot = n"},
		{"postfix", "-c", p.etc, "check"}, // also creates the queue directories
	} {
		if err := p.cmd(ctx, args...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// postfixMainCF is a stock main.cf made a pure relay: mail for sink.test
// goes to the transport map, nothing else is deliverable, no DNS.
// inet_interfaces stays 127.0.0.1 (Postfix refuses addresses that no
// interface has); the smtpd listener in master.cf names its own address.
func postfixMainCF(p *postfixTarget, addr string) string {
	return fmt.Sprintf(`# relay-bench: private Postfix instance, a pure loopback relay
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
syslog_name = postfix-relay-bench
myhostname = pfbench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:relay-bench local delivery disabled
alias_maps =
alias_database =
relay_domains =
transport_maps = hash:%[3]s/transport
default_transport = error:relay-bench no external delivery
relay_transport = error:relay-bench no external delivery
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP
maillog_file_prefixes = /var, /dev/stdout, %[4]s
maillog_file = %[5]s
# smtpd listens on %[6]s (master.cf)
`, p.spool, p.data, p.etc, p.dir, p.maillog, addr)
}

// command is a Postfix command on this instance (MAIL_CONFIG as a safety net).
func (p *postfixTarget) command(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Env = append(os.Environ(), "MAIL_CONFIG="+p.etc, "PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postfix/sbin")
	return c
}

// cmd runs a Postfix command on this instance.
func (p *postfixTarget) cmd(ctx context.Context, args ...string) error {
	if out, err := p.command(ctx, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (p *postfixTarget) Name() string { return "postfix" }

// masterPID is the PID of the instance's master process, or 0 when it is
// not running.
func (p *postfixTarget) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.spool, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func (p *postfixTarget) Start(ctx context.Context, _ *sink, g *group) (instance, error) {
	if err := p.cmd(ctx, "postsuper", "-c", p.etc, "-d", "ALL"); err != nil { // an empty queue
		return nil, err
	}
	// postfix start runs in the group: the master it leaves behind, and
	// all the master's children, are born into it.
	start := p.command(ctx, "postfix", "-c", p.etc, "start")
	out := &tailBuffer{}
	start.Stdout, start.Stderr = out, out
	if err := g.start(start); err != nil {
		return nil, fmt.Errorf("postfix start: %w", err)
	}
	if err := start.Wait(); err != nil {
		return nil, fmt.Errorf("postfix start: %w: %s", err, out)
	}
	pid := 0
	for deadline := time.Now().Add(10 * time.Second); pid == 0; pid = p.masterPID() {
		if time.Now().After(deadline) {
			return nil, errors.New("postfix start: no master process after 10s; see " + p.maillog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.addRoot(pid) // without cgroups: the master's tree
	inst := &postfixInstance{p: p}
	if err := waitListening(ctx, p.addr, 30*time.Second, nil); err != nil {
		inst.Stop()
		return nil, fmt.Errorf("postfix: %w; see %s", err, p.maillog)
	}
	return inst, nil
}

// Close stops the instance if it is still running (after an interrupted run).
func (p *postfixTarget) Close() {
	if p.masterPID() != 0 {
		if err := p.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "relay-bench:", err)
		}
	}
}

// stop runs postfix stop and waits until the master process is gone.
func (p *postfixTarget) stop() error {
	pid := p.masterPID()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.cmd(ctx, "postfix", "-c", p.etc, "stop")
	for pid != 0 && syscall.Kill(pid, 0) == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("postfix master %d still running after postfix stop", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

type postfixInstance struct{ p *postfixTarget }

func (i *postfixInstance) Addr() string { return i.p.addr }

func (i *postfixInstance) Died() <-chan struct{} { return nil }

func (i *postfixInstance) Stop() error { return i.p.stop() }
