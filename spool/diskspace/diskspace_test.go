package diskspace

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tmpfs mounts a small tmpfs, where free space is exact and quick to
// exhaust; it skips without root.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func blocks(t *testing.T, path string) (size, allocated int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func logf(t *testing.T, f *os.File, n int64) {
	t.Helper()
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
}

// A sparse file Prealloc names is allocated whole as soon as it is
// created and sized, without anyone writing to it; windowed files are
// allocated a step ahead of the writes.
func TestPreallocate(t *testing.T) {
	for _, fs := range []string{"tmpfs", "disk"} {
		t.Run(fs, func(t *testing.T) {
			dir := t.TempDir()
			if fs == "tmpfs" {
				dir = tmpfs(t, "64m")
			}
			g, err := Open(dir, Options{Ballast: -1, Prealloc: func(name string) int64 {
				switch {
				case strings.HasSuffix(name, ".mem"):
					return 1 << 62
				case strings.HasSuffix(name, ".vlog"):
					return 1 << 20
				}
				return 0
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			mem := filepath.Join(dir, "00001.mem")
			f, err := os.Create(mem)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			logf(t, f, 8<<20)
			waitUntil(t, "the .mem file to be allocated", func() bool {
				size, alloc := blocks(t, mem)
				return alloc >= size
			})
			other := filepath.Join(dir, "000001.sst")
			os.WriteFile(other, nil, 0o600)
			os.Truncate(other, 4<<20)

			vlog := filepath.Join(dir, "000001.vlog")
			v, err := os.Create(vlog)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			logf(t, v, 16<<20)
			waitUntil(t, "the first step of the .vlog", func() bool { _, a := blocks(t, vlog); return a >= 1<<20 })
			// A log written front to back past the middle of the step: the
			// next step follows.
			v.WriteAt([]byte(strings.Repeat("entry", 600<<10/5)), 0)
			waitUntil(t, "the second step of the .vlog", func() bool { _, a := blocks(t, vlog); return a >= 2<<20 })
			if _, a := blocks(t, vlog); a > 3<<20 {
				t.Errorf("vlog allocated %d bytes ahead of its writes, want a step or two", a)
			}
			if _, a := blocks(t, other); a != 0 {
				t.Errorf("a file Prealloc does not name was allocated (%d bytes)", a)
			}
		})
	}
}

// Concurrent reservations cannot together pass one free-space figure:
// what is reserved never exceeds free space less the reserve.
func TestReserveAtomic(t *testing.T) {
	dir := tmpfs(t, "64m")
	g, err := Open(dir, Options{Ballast: -1, Reserve: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	free, _, _ := g.Free()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 70 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.Reserve(1 << 20) {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	want := (free - 16<<20) >> 20
	if ok.Load() != want {
		t.Fatalf("%d reservations of 1 MiB passed with %d MiB above the reserve", ok.Load(), want)
	}
	if g.Room(1) {
		t.Fatal("Room says yes with everything reserved")
	}
	if _, inflight, _ := g.Free(); inflight != want<<20 {
		t.Fatalf("in flight %d, want %d", inflight, want<<20)
	}
	g.Release(want << 20)
	if !g.Room(1 << 20) {
		t.Fatal("Room says no after every reservation was released")
	}
}

// The ballast goes as soon as something else takes the free space, and
// comes back once the space is back.
func TestBallast(t *testing.T) {
	dir := tmpfs(t, "64m")
	g, err := Open(dir, Options{Ballast: 8 << 20, Reserve: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ballast := filepath.Join(dir, BallastName)
	if _, a := blocks(t, ballast); a != 8<<20 {
		t.Fatalf("ballast has %d bytes allocated, want 8 MiB", a)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	free, _, _ := g.Free()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, free); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitUntil(t, "the ballast to go", func() bool { _, err := os.Stat(ballast); return os.IsNotExist(err) })
	// tmpfs may give the blocks of an unlinked file back a moment later.
	waitUntil(t, "the ballast's space to be free", func() bool { free, _, _ := g.Free(); return free >= 8<<20 })
	os.Remove(filler)
	waitUntil(t, "the ballast to return", func() bool { _, err := os.Stat(ballast); return err == nil })
}
