package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
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

func (t *relayTarget) Start(ctx context.Context, sk *sink) (instance, error) {
	t.runs++
	dir := filepath.Join(t.base, fmt.Sprintf("relay-%02d", t.runs))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(confPath, []byte(relayConfig(filepath.Join(dir, "data"), t.addr, sk.addr)), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "relay.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	r := &relayInstance{
		cmd:    exec.Command(t.bin, "serve", "--config", confPath, "--log-level", "warn"),
		addr:   t.addr,
		dir:    dir,
		log:    logPath,
		keep:   t.keep,
		exited: make(chan struct{}),
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("relay serve: %w", err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	if err := waitListening(ctx, t.addr, 30*time.Second, r.exited); err != nil {
		err = fmt.Errorf("relay serve: %w; log %s: %s", err, logPath, fileTail(logPath))
		r.Stop()
		return nil, err
	}
	return r, nil
}

type relayInstance struct {
	cmd      *exec.Cmd
	addr     string
	dir, log string
	keep     bool
	exited   chan struct{}
	waitErr  error // set before exited is closed
}

func (r *relayInstance) Addr() string { return r.addr }

func (r *relayInstance) Died() <-chan struct{} { return r.exited }

func (r *relayInstance) PeakRSS() (int64, error) { return vmHWM(r.cmd.Process.Pid) }

// Stop stops the relay as an operator would (SIGTERM), and removes its data
// directory unless asked to keep it.
func (r *relayInstance) Stop() error {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(60 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	var err error
	if r.waitErr != nil {
		err = fmt.Errorf("relay serve: %w; log %s: %s", r.waitErr, r.log, fileTail(r.log))
	}
	if !r.keep {
		os.RemoveAll(r.dir)
	}
	return err
}

// fileTail is the end of a log file, on one line.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	t := &tailBuffer{}
	t.Write(b)
	return t.String()
}
