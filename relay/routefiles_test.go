package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relay-mta/relay/relay/config"
)

// TestRouteFilesRefuseReadablePassword: the relay does not start with a
// smarthost password file that group or others may read, and says which.
func TestRouteFilesRefuseReadablePassword(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "smarthost.pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(pw, 0o640) // whatever the umask
	cfg := config.Default()
	cfg.Routes = []config.Route{{Domain: "*", To: "smtp.example.net:587", Host: "smtp.example.net", Port: 587,
		TLS: config.TLSRequire, AuthUser: "u", AuthPasswordFile: pw}}
	err := NewRouter(cfg).LoadRouteFiles()
	if err == nil || !strings.Contains(err.Error(), "readable by group or others (mode 0640)") || !strings.Contains(err.Error(), pw) {
		t.Fatalf("LoadRouteFiles with a 0640 password file: %v", err)
	}
	os.Chmod(pw, 0o600)
	r := NewRouter(cfg)
	if err := r.LoadRouteFiles(); err != nil {
		t.Fatal(err)
	}
	hop, _, err := r.Route("<x@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	if hop.Auth == nil || hop.Auth.User != "u" || hop.Auth.Password != "secret" {
		t.Fatalf("hop.Auth = %#v", hop.Auth)
	}
	if strings.Contains(hop.Key, "secret") || !strings.Contains(hop.Key, ";auth=u") {
		t.Errorf("lane key %q", hop.Key)
	}
}
