package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/relay-mta/relay/relay"
)

// TestUsageMistakes: a bad or missing flag, or an unknown command, is one
// line saying what is wrong and the command's usage line, exit status 1,
// never the whole help page.
func TestUsageMistakes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"queue", "list", "--bogus"}, "relay: queue list: unknown flag --bogus\nusage: relay queue list [options]  (relay queue list --help for more)\n"},
		{[]string{"user", "add", "bob"}, "relay: user add: missing --password-file\nusage: relay user add [options] NAME  (relay user add --help for more)\n"},
		{[]string{"dkim", "keygen"}, "relay: dkim keygen: missing --domain, --selector, --out\nusage: relay dkim keygen [options]  (relay dkim keygen --help for more)\n"},
		{[]string{"read", "--timeout", "soon"}, "relay: read: invalid value \"soon\" for --timeout: time: invalid duration \"soon\"\nusage: relay read [options]  (relay read --help for more)\n"},
		{[]string{"send", "--to"}, "relay: send: flag needs an argument: --to\nusage: relay send [options]  (relay send --help for more)\n"},
		{[]string{"auth", "check"}, "relay: auth check: missing --ip, --helo\nusage: relay auth check [options] [FILE]  (relay auth check --help for more)\n"},
		{[]string{"auth", "check", "--ip", "b.test", "--helo", "b.test"}, "relay: auth check: --ip \"b.test\" is not an IP address\nusage: relay auth check [options] [FILE]  (relay auth check --help for more)\n"},
		{[]string{"auth", "check", "--ip", "127.0.28.5", "--helo", "b.test", "--mail-from", "a@@b"}, "relay: auth check: --mail-from: envelope: invalid character '@' in domain \"@b\": syntax error in address\nusage: relay auth check [options] [FILE]  (relay auth check --help for more)\n"},
		{[]string{"bogus"}, "relay: unknown command \"bogus\"\nusage: relay [options] COMMAND  (relay --help for more)\n"},
		{[]string{"queue", "transfer"}, "relay: queue transfer: missing --to\nusage: relay queue transfer [options] --to HOST:PORT ID...|--all  (relay queue transfer --help for more)\n"},
		{[]string{"queue", "bogus"}, "relay: queue: unknown command \"bogus\"\nusage: relay queue [options] COMMAND  (relay queue --help for more)\n"},
	} {
		var stderr bytes.Buffer
		code := runApp(context.Background(), append([]string{"relay"}, c.args...), &stderr)
		if code != 1 || stderr.String() != c.want {
			t.Errorf("relay %s: exit %d, stderr\n%s\nwant exit 1 and\n%s", strings.Join(c.args, " "), code, stderr.String(), c.want)
		}
	}
}

// TestErrorPrefixOnce: the relay package's errors start with its name,
// which is also the program's; it is printed once.
func TestErrorPrefixOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.24.30:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := writeTestFile(t, "r.toml", fmt.Sprintf("data_dir = \"d\"\n[smtp]\nlisten = [%q]\n[pop3]\nlisten = []\n[admin]\nsocket = \"\"\n", taken.Addr()))
	var stderr bytes.Buffer
	code := runApp(context.Background(), []string{"relay", "serve", "--config", cfg}, &stderr)
	want := "relay: smtp listen: listen tcp " + taken.Addr().String() + ": bind: address already in use\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("serve on an address in use: exit %d, %q; want %q", code, stderr.String(), want)
	}
}

// TestCertErrorNamesConfigLine: a certificate or key that cannot be read
// is reported like a mistake in the file: file, line, key, then the path.
func TestCertErrorNamesConfigLine(t *testing.T) {
	dir := t.TempDir()
	base := "data_dir = \"d\"\n[smtp]\nlisten = [\"127.0.24.30:0\"]\n[pop3]\nlisten = []\n[admin]\nsocket = \"\"\n[tls]\n"
	cert, key := writeCert(t, dir)
	for _, c := range []struct{ tls, want string }{
		{"cert = \"missing.pem\"\nkey = " + strconv.Quote(key) + "\n",
			"r.toml:9: tls.cert: open " + filepath.Join(dir, "d", "missing.pem") + ": no such file or directory"},
		{"cert = " + strconv.Quote(cert) + "\nkey = \"missing.key\"\n",
			"r.toml:10: tls.key: open " + filepath.Join(dir, "d", "missing.key") + ": no such file or directory"},
		{"cert = " + strconv.Quote(key) + "\nkey = " + strconv.Quote(key) + "\n",
			"r.toml:9: tls.cert: certificate " + key + " and key " + key + ": tls: failed to find certificate PEM data"},
	} {
		cfg := filepath.Join(dir, "r.toml")
		if err := os.WriteFile(cfg, []byte(base+c.tls), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		code := runApp(context.Background(), []string{"relay", "serve", "--config", cfg}, &stderr)
		want := "relay: " + filepath.Join(dir, c.want) + "\n"
		if code != 1 || !strings.HasPrefix(stderr.String(), want[:len(want)-1]) {
			t.Errorf("serve with\n%s: exit %d, %q; want %q", c.tls, code, stderr.String(), want)
		}
	}
}

// writeTestFile writes a file in a fresh directory and returns its path.
func writeTestFile(t *testing.T, name, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeCert writes a self-signed certificate and its key into dir.
func writeCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	cert, key, err := relay.WriteSelfSigned(dir, "r.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
