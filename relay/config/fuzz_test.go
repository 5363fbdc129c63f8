package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary files to Load: it must never panic, and every
// error must be a located *Error (file and line) or the file's own read
// error, so that an operator is always told where the mistake is.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		"hostname = \"b.test\"\n",
		"[smtp]\nlisten = [\"127.0.0.1:2525\"]\nmax_message_size = \"10MiB\"\n",
		"[[route]]\ndomain = \"*\"\nto = \"127.0.0.1:25\"\ntls = \"none\"\n",
		"[queue]\nretry_min = \"1x\"\n",
		"relay_networks = [\"10.0.0.0/33\"]\n",
		"[dkim.keys]\n\"s._domainkey.a.test\" = \"v=DKIM1; k=ed25519; p=AA==\"\n",
		"[sender_domains]\nalice = [\"*\", \"b.test\"]\n",
		"[fleet]\nredis = \"127.0.0.1:6379\"\nredis_password_file = \"redis.pw\"\nredis_db = 1\nredis_key_prefix = \"f1:\"\n",
		"[smtp\n",
		"a.b.c = 1\n",
	} {
		f.Add(seed)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(dir, "relay.toml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err == nil {
			if cfg == nil || cfg.Hostname == "" {
				t.Fatalf("Load(%q) = %+v without an error", text, cfg)
			}
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("Load(%q): unlocated error %v", text, err)
		}
		if !strings.Contains(err.Error(), "relay.toml") {
			t.Fatalf("Load(%q): error does not name the file: %v", text, err)
		}
	})
}
