package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
)

// smallDisk mounts a tmpfs of the given size for a test; it skips the
// test when mounting is not possible (not root).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestDiskFull: when data_dir runs short of space the relay answers
// 452 4.3.1, stays up, keeps every message it accepted, and accepts again
// by itself once space returns.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, "160m")
	n := newNode(t, "a", "127.0.0.241")
	n.cfg.DataDir = filepath.Join(disk, "data")
	n.cfg.UsersFile = ""
	n.cfg.SMTP.MaxMessageSize = 1 << 20
	n.cfg.Queue.MinFreeSpace = 64 << 20
	n.cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	n.start()

	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, send(t, n.addr, "u@elsewhere.test", "before "+string(rune('a'+i))))
	}
	// Fill the disk to just under the reserve.
	filler := filepath.Join(disk, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, freeBytes(t, disk)-32<<20); err != nil {
		t.Fatalf("fallocate: %v", err)
	}
	f.Close()
	time.Sleep(300 * time.Millisecond) // past the guard's recheck interval
	c := smtptest.Dial(t, n.addr)
	c.Cmd("EHLO sender.test", "250 ")
	c.Cmd("MAIL FROM:<s@a.test>", "452 4.3.1")
	c.Cmd("MAIL FROM:<s@a.test> SIZE=1000", "452 4.3.1")
	for _, id := range ids {
		if _, err := n.r.Spool().Get(id); err != nil {
			t.Fatalf("accepted message %s lost while the disk was full: %v", id, err)
		}
	}
	// Space returns: accepted again, without a restart.
	os.Remove(filler)
	time.Sleep(300 * time.Millisecond)
	c.Cmd("MAIL FROM:<s@a.test>", "250 ")
	c.Cmd("RCPT TO:<u@elsewhere.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd("Subject: after\r\n\r\nx\r\n.", "250 ")
	if q := n.queued(); len(q) != 11 {
		t.Fatalf("%d messages queued, want 11", len(q))
	}
}
