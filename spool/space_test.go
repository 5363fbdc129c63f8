package spool

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// Open makes the spool private whatever it was: a pre-created 0755
// directory must not leave 0644 files that other users can read.
func TestOpenMakesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // whatever the umask
	if err := os.WriteFile(filepath.Join(dir, "old"), []byte("mail"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "old"), 0o644)
	s, err := Open(Options{Dir: dir, GCInterval: -1, Ballast: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("spool directory has mode %v, want 0700", fi.Mode().Perm())
	}
	fi, _ = os.Stat(filepath.Join(dir, "old"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file in the spool has mode %v, want 0600", fi.Mode().Perm())
	}
}

// On a filesystem too full for Badger to create its files, Open fails
// with one line saying how much it needs, instead of a SIGBUS.
func TestOpenFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	_, err := Open(Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1})
	var nospace *NoSpaceError
	if !errors.As(err, &nospace) {
		t.Fatalf("Open on a 12 MiB filesystem: %v, want a NoSpaceError", err)
	}
	if !regexp.MustCompile(`^spool: open \S+: \d+\.\d MiB free, need at least \d+ MiB to open the spool$`).MatchString(err.Error()) {
		t.Fatalf("error %q is not the one line", err)
	}
	t.Log(err)
}
