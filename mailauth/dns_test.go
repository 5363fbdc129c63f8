package mailauth

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/relay-mta/relay/relay/resolve"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// dnsIP is where the tests' unbound listens (this package's share of
// 127.0.28.x).
const dnsIP = "127.0.28.1"

// startDNS runs unbound with zones and returns it with a resolver on it,
// the relay's own, as [dns] servers would configure it.
func startDNS(t *testing.T, zones ...dnstest.Zone) (*dnstest.Server, *resolve.Resolver) {
	t.Helper()
	srv := dnstest.Start(t, dnsIP, zones...)
	r, err := resolve.New(resolve.Options{Servers: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, r
}

// python returns a Python 3 that can import modules (Debian's, where
// python3-* packages install them, before any other on PATH), or skips
// the test naming the packages to install.
func python(t *testing.T, modules, packages string) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import "+modules).Run() == nil {
			return p
		}
	}
	t.Skipf("python3 with %s is not installed (apt-get install %s): no independent peer to compare with", modules, packages)
	return ""
}

// runPython runs script with in as JSON on its standard input and
// decodes its standard output, JSON, into out.
func runPython(t *testing.T, py, script string, in, out any) {
	t.Helper()
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", py, err, stderr.Bytes())
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("%s output: %v\n%s\n%s", py, err, res, stderr.Bytes())
	}
}
