package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// debRoot makes sure the Debian packages pkgs are downloaded (apt-get
// download) and extracted (dpkg-deb -x) under cache, and returns the
// directory they are extracted into and each package's version. Exim and
// OpenSMTPD cannot be installed with apt here: they conflict with Postfix
// (mail-transport-agent), and installing one would remove it. The
// packages' maintainer scripts do not run; the private namespace
// (privateNS) supplies what they would have made (users, directories).
func debRoot(ctx context.Context, cache string, pkgs ...string) (string, map[string]string, error) {
	debs, root := filepath.Join(cache, "debs"), filepath.Join(cache, "root")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", nil, err
	}
	find := func(pkg string) string {
		m, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	var missing []string
	for _, p := range pkgs {
		if find(p) == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		download := func() error {
			cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download"}, missing...)...)
			cmd.Dir = debs
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get download %s: %w: %s", strings.Join(missing, " "), err, lastLine(out))
			}
			return nil
		}
		if err := download(); err != nil {
			// The package lists may be stale (a security update replaced the file).
			if out, err2 := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); err2 != nil {
				return "", nil, fmt.Errorf("%w; apt-get update: %v: %s", err, err2, lastLine(out))
			}
			if err := download(); err != nil {
				return "", nil, err
			}
		}
	}
	versions := map[string]string{}
	for _, p := range pkgs {
		deb := find(p)
		if deb == "" {
			return "", nil, fmt.Errorf("apt-get download %s left no .deb in %s", p, debs)
		}
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, lastLine(out))
		}
		out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb, "Version").Output()
		if err != nil {
			return "", nil, fmt.Errorf("dpkg-deb -f %s Version: %w", deb, err)
		}
		versions[p] = strings.TrimSpace(string(out))
	}
	return root, versions, nil
}

// lastLine is the last non-empty line of a command's output.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// privateNS runs a peer in a private mount namespace (unshare -m, mounts
// private), so that it finds what its package's maintainer scripts would
// have made, while nothing on the host changes:
//
//   - /usr is the host's with the extracted packages (usr, under a debRoot)
//     on top: a read-only overlay, so binaries and libraries are at their
//     compiled-in paths;
//   - /etc and /var are the host's with a writable layer of their own on
//     top (overlays whose upper directories are under dir); etc holds the
//     files to add or replace (passwd and group with the peer's users,
//     resolv.conf, ...);
//   - mkdirs are made (in the overlays), then each bind mounted.
//
// The peer keeps the PID of the command (unshare and sh exec it).
type privateNS struct {
	dir    string            // where the overlays' layers go, one directory per command
	usr    string            // root of extracted packages whose usr/ goes over /usr; "" none
	etc    map[string]string // path under /etc -> contents
	mkdirs []string
	binds  [][2]string // {from, to}
	runs   int
}

// command makes the command that runs argv in a fresh namespace. (Not
// tied to a context: the target's Stop ends it, or the group's close.)
func (n *privateNS) command(argv ...string) (*exec.Cmd, error) {
	n.runs++
	d := filepath.Join(n.dir, fmt.Sprintf("ns-%02d", n.runs))
	for _, sub := range []string{"etc", "etc.work", "var", "var.work"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return nil, err
		}
	}
	for name, text := range n.etc {
		p := filepath.Join(d, "etc", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	q := func(s string) string { return shellJoin([]string{s}) }
	overlay := func(dir string) string {
		return fmt.Sprintf("mount -t overlay overlay -o lowerdir=/%[1]s,upperdir=%[2]s,workdir=%[3]s /%[1]s\n",
			dir, q(filepath.Join(d, dir)), q(filepath.Join(d, dir+".work")))
	}
	script := "set -e\n"
	if n.usr != "" {
		script += fmt.Sprintf("mount -t overlay overlay -o ro,lowerdir=%s:/usr /usr\n", q(filepath.Join(n.usr, "usr")))
	}
	script += overlay("etc") + overlay("var")
	for _, m := range n.mkdirs {
		script += "mkdir -p " + q(m) + "\n"
	}
	for _, b := range n.binds {
		script += fmt.Sprintf("mkdir -p %[2]s\nmount --bind %[1]s %[2]s\n", q(b[0]), q(b[1]))
	}
	script += `exec "$@"` + "\n"
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", script, "relay-bench-ns"}, argv...)
	return exec.Command("unshare", args...), nil
}

// nsUsers returns the host's /etc/passwd and /etc/group with system users
// (and groups of the same name) added for names, at IDs the host does not
// use, and those IDs.
func nsUsers(names ...string) (passwd, group string, ids map[string]int, err error) {
	pw, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "", "", nil, err
	}
	gr, err := os.ReadFile("/etc/group")
	if err != nil {
		return "", "", nil, err
	}
	used := map[int]bool{}
	for _, f := range []string{string(pw), string(gr)} {
		for _, line := range strings.Split(f, "\n") {
			if fields := strings.Split(line, ":"); len(fields) > 2 {
				if id, err := strconv.Atoi(fields[2]); err == nil {
					used[id] = true
				}
			}
		}
	}
	passwd, group, ids = withNewline(string(pw)), withNewline(string(gr)), map[string]int{}
	id := 999
	for _, name := range names {
		for used[id] {
			id--
		}
		used[id] = true
		ids[name] = id
		passwd += fmt.Sprintf("%s:x:%d:%d:%s (relay-bench private namespace):/nonexistent:/usr/sbin/nologin\n", name, id, id, name)
		group += fmt.Sprintf("%s:x:%d:\n", name, id)
	}
	return passwd, group, ids, nil
}

func withNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}
