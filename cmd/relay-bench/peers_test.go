package main

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestPeers runs every target through one short configuration (two
// sessions, two recipients) and checks that each reports every column.
// Opt-in, as root: RELAY_BENCH_PEERS=1 go test -run TestPeers -v ./cmd/relay-bench
// (a few minutes; it may download Exim, OpenSMTPD and Haraka into
// /tmp/relay-bench). A peer that cannot run here is skipped with the reason.
func TestPeers(t *testing.T) {
	if os.Getenv("RELAY_BENCH_PEERS") == "" {
		t.Skip("set RELAY_BENCH_PEERS=1 to run every peer (root; minutes)")
	}
	tools, err := findTools()
	if err != nil {
		t.Skip(err)
	}
	opts, err := parseOptions([]string{"relay-bench", "-sizes", "1024", "-sessions", "2", "-rcpts", "2", "-n", "40", "-warmup", "5", "-settle", "0s", "-repo", "../.."})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(opts.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: the peers' users must reach their queues below it.
	base, err := os.MkdirTemp(opts.dir, "test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bench{opts: opts, tools: tools}
	if os.Geteuid() == 0 {
		b.cgroups = cgroupBase()
	}
	ctx := context.Background()
	c := opts.matrix()[0]
	for _, name := range opts.targets {
		t.Run(name, func(t *testing.T) {
			tg, why, err := setupTarget(ctx, opts, name, base)
			if err != nil {
				t.Fatal(err)
			}
			if why != "" {
				t.Skip(why)
			}
			if cl, ok := tg.(interface{ Close() }); ok {
				defer cl.Close()
			}
			r := b.runOne(ctx, tg, c)
			t.Log(r.summary())
			if r.err != nil || len(r.notes) > 0 {
				t.Fatalf("error %v; notes %q", r.err, r.notes)
			}
			if r.acceptRate() <= 0 || r.e2eRate() <= 0 || len(r.probe.latencies) == 0 || r.mem.rss <= 0 || r.mem.anon <= 0 || r.cpu <= 0 {
				t.Errorf("a column is empty: %s", r.summary())
			}
			if r.e2e < r.accept || r.cpu > time.Second {
				t.Errorf("implausible: e2e %v before accept %v, or %v CPU per message", r.e2e, r.accept, r.cpu)
			}
		})
	}
}
