package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/relay-mta/relay/client"
)

// TestSaveAttachment: relay read --save DIR creates DIR, never replaces a
// file (the second copy of a name gets name-1.ext), and keeps only the base
// name of what the sender called the file.
func TestSaveAttachment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	save := func(name, data string) string {
		t.Helper()
		path, err := saveAttachment(dir, client.Attachment{Filename: name, Data: []byte(data)})
		if err != nil {
			t.Fatalf("save %q: %v", name, err)
		}
		return path
	}
	want := map[string]string{
		save("a.toml", "first"):          "first",
		save("a.toml", "second"):         "second",
		save("../../a.toml", "third"):    "third",
		save("noext", "x"):               "x",
		save("noext", "y"):               "y",
		save(`..\..\evil.sh`, "ignored"): "ignored",
	}
	names := map[string]bool{}
	for path, data := range want {
		if filepath.Dir(path) != dir {
			t.Errorf("%s written outside %s", path, dir)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Errorf("%s holds %q (%v), want %q", path, got, err, data)
		}
		names[filepath.Base(path)] = true
	}
	for _, n := range []string{"a.toml", "a-1.toml", "a-2.toml", "noext", "noext-1", "evil.sh"} {
		if !names[n] {
			t.Errorf("no file %s among %v", n, names)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("--save DIR: %v, %v; want a directory of mode 0700", fi, err)
	}
}
