package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// harakaTarget is Haraka 3 (npm) as a pure relay: one process (nodes
// unset, the default), the relay plugin letting 127.0.0.0/8 relay, so
// that mail goes to Haraka's outbound queue on disk, and smtp_forward's
// get_mx hook routing sink.test to the sink (enable_outbound = false: it
// does not forward in the SMTP transaction itself). One plugin of its own
// answers the per-connection reverse lookup with a constant, so that
// Haraka asks no DNS; everything else is the instance's default.
type harakaTarget struct {
	inst, addr string
	bin        string
	version    string
}

// harakaPackage installs Haraka@3 with npm under cache, once, and returns
// the haraka command and its version.
func harakaPackage(ctx context.Context, cache string) (string, string, error) {
	dir := filepath.Join(cache, "haraka-npm")
	bin := filepath.Join(dir, "node_modules", ".bin", "haraka")
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "", fmt.Errorf("node not found (apt-get install nodejs npm)")
	}
	if _, err := os.Stat(bin); err != nil {
		npm := []string{"npm"}
		if _, err := exec.LookPath("npm"); err != nil {
			npm = []string{node, "/usr/lib/node_modules/npm/bin/npm-cli.js"}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "", err
		}
		cmd := exec.CommandContext(ctx, npm[0], append(npm[1:], "install", "--no-audit", "--no-fund", "Haraka@3")...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("npm install Haraka@3: %w: %s", err, lastLine(out))
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "Haraka", "package.json"))
	if err != nil {
		return "", "", err
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", "", fmt.Errorf("Haraka's package.json: %w", err)
	}
	return bin, pkg.Version, nil
}

func setupHaraka(ctx context.Context, cache, base, addr, sinkAddr string) (*harakaTarget, error) {
	bin, version, err := harakaPackage(ctx, cache)
	if err != nil {
		return nil, err
	}
	t := &harakaTarget{inst: filepath.Join(base, "haraka"), addr: addr, bin: bin, version: version}
	if out, err := exec.CommandContext(ctx, bin, "-i", t.inst).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haraka -i %s: %w: %s", t.inst, err, lastLine(out))
	}
	sinkIP, sinkPort, _ := net.SplitHostPort(sinkAddr)
	files := map[string]string{
		"config/smtp.ini": "; relay-bench: one process (nodes unset, the default)\nlisten=" + addr + "\n",
		"config/plugins": `# relay-bench: a pure relay.
# rdns_static: answers the lookup_rdns hook with a constant: no DNS.
# relay: connections from relay_acl_allow relay; their mail goes to the
#   outbound queue (on disk).
# queue/smtp_forward: only its get_mx hook is used (enable_outbound=false),
#   routing sink.test to the sink for outbound delivery.
rdns_static
relay
queue/smtp_forward
`,
		"plugins/rdns_static.js": `// relay-bench: no DNS. Answer Haraka's per-connection reverse lookup with
// a constant (the load comes from 127.0.0.1).
exports.hook_lookup_rdns = function (next, connection) {
    next(OK, 'localhost')
}
`,
		"config/relay.ini":        "[relay]\nacl=true\nforce_routing=false\ndest_domains=false\nall=false\n",
		"config/relay_acl_allow":  "127.0.0.0/8\n",
		"config/smtp_forward.ini": fmt.Sprintf("; relay-bench: only the get_mx hook (a static route); mail is queued first\nhost=%[1]s\nport=%[2]s\nenable_outbound=false\n\n[%[3]s]\nhost=%[1]s\nport=%[2]s\n", sinkIP, sinkPort, sinkDomain),
		"config/outbound.ini":     "; relay-bench: plain SMTP to the sink, no STARTTLS attempt\nenable_tls=false\n",
		"config/me":               "haraka.bench.test\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(t.inst, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *harakaTarget) Name() string { return "haraka" }

func (t *harakaTarget) Version() string { return "Haraka " + t.version }

func (t *harakaTarget) Start(ctx context.Context, _ *sink, g *group) (instance, error) {
	if err := os.RemoveAll(filepath.Join(t.inst, "queue")); err != nil { // an empty queue
		return nil, err
	}
	cmd := exec.Command(t.bin, "-c", t.inst)
	return startDaemon(ctx, "haraka", g, cmd, t.addr, filepath.Join(t.inst, "haraka.log"))
}
