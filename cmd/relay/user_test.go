package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relay-mta/relay/relay/admin"
	"github.com/urfave/cli/v3"
)

// TestUserUnban: `relay user unban ADDRESS` reaches the daemon's admin
// socket and lifts the ban of exactly that address; a bad address is a
// one-line error before anything is sent.
func TestUserUnban(t *testing.T) {
	var got []netip.Addr
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := admin.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.New(admin.Options{Unban: func(ip netip.Addr) bool { got = append(got, ip); return true }})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	run := func(args ...string) error {
		app := &cli.Command{Name: "relay", Commands: []*cli.Command{userCommand()}}
		return app.Run(context.Background(), append([]string{"relay", "user", "unban"}, args...))
	}
	if err := run("127.0.20.9", "--admin", sock); err != nil {
		t.Fatalf("unban: %v", err)
	}
	if err := run("::ffff:127.0.20.10", "--admin", sock); err != nil {
		t.Fatalf("unban of a mapped address: %v", err)
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.20.9"), netip.MustParseAddr("127.0.20.10")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("daemon asked to unban %v, want %v", got, want)
	}
	for _, bad := range [][]string{{"example.test", "--admin", sock}, {"--admin", sock}, {"127.0.20.9", "127.0.20.10", "--admin", sock}} {
		err := run(bad...)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("unban %q: %v, want a one-line error", bad, err)
		}
	}
	if len(got) != 2 {
		t.Fatalf("bad arguments reached the daemon: %v", got)
	}
	if err := run("127.0.20.9", "--admin", filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("unban with no daemon: %v", err)
	}
}
