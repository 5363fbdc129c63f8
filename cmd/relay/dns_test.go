package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relay-mta/relay/relay/resolve/dnstest"
	"github.com/urfave/cli/v3"
)

// `relay dns check DOMAIN` through the [dns] servers of --config: the
// checklist on stdout, exit status 1 when a record is missing.
func TestDNSCheck(t *testing.T) {
	srv := dnstest.Start(t, "127.0.26.1", dnstest.Zone{Name: "cli.test", Records: []string{"@ MX 10 mx", "mx A 127.0.26.7", `@ TXT "v=spf1 mx -all"`}})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.toml")
	os.WriteFile(cfg, []byte("data_dir = \".\"\n[dns]\nservers = [\""+srv.Addr+"\"]\n"), 0o644)

	out := filepath.Join(dir, "out")
	f, _ := os.Create(out)
	stdout := os.Stdout
	os.Stdout = f
	app := &cli.Command{Name: "relay", Commands: []*cli.Command{dnsCommand()}}
	err := app.Run(context.Background(), []string{"relay", "dns", "check", "--config", cfg, "cli.test"})
	os.Stdout = stdout
	f.Close()
	b, _ := os.ReadFile(out)
	if err == nil || !strings.Contains(err.Error(), "cli.test lacks records") {
		t.Errorf("err = %v, want the missing records reported", err)
	}
	var lines []string // columns are aligned: compare with single spaces
	for _, l := range strings.Split(string(b), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{"MX ok 10 mx.cli.test (127.0.26.7)", `SPF ok "v=spf1 mx -all"`, "DMARC missing", "MTA-STS none", "DANE mx.cli.test none"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, b)
		}
	}
}
