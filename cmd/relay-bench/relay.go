package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// buildRelay builds ./cmd/relay of the repository into dir. (Never without
// -o at the repository root: the directory relay/ is in the way.)
func buildRelay(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "relay")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/relay")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s ./cmd/relay in %s: %w\n%s", bin, repo, err, out)
	}
	return bin, nil
}

// relayTarget runs `relay serve` as a subprocess, configured as in
// tools/relay_vs_direct.sh, with a fresh data directory per configuration.
type relayTarget struct {
	bin, base, addr string
	keep            bool // keep each configuration's data directory
	runs            int
}

func (t *relayTarget) Name() string { return "relay" }

// relayConfig routes sink.test to the sink without TLS; POP3 and the admin
// socket are off.
func relayConfig(dataDir, listen, sinkAddr string) string {
	return fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
local_domains = ["relay.test"]
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = ""
[queue]
per_hop_concurrency = 20
[[route]]
domain = %q
to = %q
tls = "none"
`, dataDir, listen, sinkDomain, sinkAddr)
}

func (t *relayTarget) Start(ctx context.Context, sk *sink, g *group) (instance, error) {
	t.runs++
	dir := filepath.Join(t.base, fmt.Sprintf("relay-%02d", t.runs))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(confPath, []byte(relayConfig(filepath.Join(dir, "data"), t.addr, sk.addr)), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(t.bin, "serve", "--config", confPath, "--log-level", "warn")
	d, err := startDaemon(ctx, "relay serve", g, cmd, t.addr, filepath.Join(dir, "relay.log"))
	if err != nil {
		return nil, err
	}
	return &relayInstance{daemon: d, dir: dir, keep: t.keep}, nil
}

type relayInstance struct {
	*daemon
	dir  string
	keep bool
}

// Stop stops the relay as an operator would (SIGTERM), and removes its data
// directory unless asked to keep it.
func (r *relayInstance) Stop() error {
	err := r.daemon.Stop()
	if !r.keep {
		os.RemoveAll(r.dir)
	}
	return err
}
