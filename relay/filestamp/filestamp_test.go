package filestamp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if _, _, _, err := Read(path, Stamp{}, true); !IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
	os.WriteFile(path, []byte("one"), 0o600)
	data, changed, st, err := Read(path, Stamp{}, false)
	if err != nil || !changed || string(data) != "one" || !st.Exists() || st.Info() == nil {
		t.Fatalf("first read: %q %v %v", data, changed, err)
	}
	// The same content again: unchanged.
	if data, changed, _, err := Read(path, st, false); err != nil || changed || data != nil {
		t.Fatalf("unchanged: %q %v %v", data, changed, err)
	}
	// Same size and mtime, new content, within the racy window: seen.
	mt := st.Info().ModTime()
	os.WriteFile(path, []byte("two"), 0o600)
	os.Chtimes(path, mt, mt)
	if data, changed, _, err := Read(path, st, false); err != nil || !changed || string(data) != "two" {
		t.Fatalf("racy edit: %q %v %v", data, changed, err)
	}
	// A file old enough is trusted by its stat alone.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	_, _, st, _ = Read(path, Stamp{}, false)
	os.WriteFile(path, []byte("333"), 0o600)
	os.Chtimes(path, old, old)
	if _, changed, _, _ := Read(path, st, false); changed {
		t.Error("an old file with the same stat was read again")
	}
	if data, changed, _, _ := Read(path, st, true); !changed || string(data) != "333" {
		t.Error("force did not read")
	}
}
