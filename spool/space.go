package spool

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/relay-mta/relay/spool/diskspace"
)

// Space returns the guard of the spool's disk space (doc.go, "Disk
// space"): the SMTP layer reserves the bytes of each message with it
// before storing, and refuses new mail when it says no.
func (s *Spool) Space() *diskspace.Guard { return s.space }

// NoSpaceError is Open's error when the filesystem has too little free
// space for Badger to open the database (it creates files at once).
type NoSpaceError struct {
	Dir        string
	Free, Need int64
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("spool: open %s: %.1f MiB free, need at least %d MiB to open the spool",
		e.Dir, float64(e.Free)/(1<<20), (e.Need+1<<20-1)>>20)
}

// vlogAllocStep is how far ahead value-log files are allocated. A value
// log is created sparse at 2 x ValueLogFileSize (128 MiB); allocating all
// of it would cost that much disk per start and per rotation, so it is
// allocated 8 MiB at a time, ahead of Badger's writes.
const vlogAllocStep = 8 << 20

// preallocStep tells the guard which of Badger's files to allocate (see
// diskspace.Options.Prealloc): the ones Badger creates sparse and fills
// through a memory map while running. Tables (.sst) are written whole
// right after their creation, faster than anyone could allocate them:
// the reserve and the ballast cover those.
func preallocStep(o badger.Options) func(string) int64 {
	return func(name string) int64 {
		switch {
		case strings.HasSuffix(name, ".mem"), name == "DISCARD":
			return 1 << 62 // whole
		case strings.HasSuffix(name, ".vlog"):
			return vlogAllocStep
		}
		return 0
	}
}

// openNeed is the free space badger.Open needs: a new memtable WAL
// (2 x MemTableSize), the first step of a new value log, the discard
// file, and the flush of one replayed memtable to a table.
func openNeed(o badger.Options) int64 {
	return 2*o.MemTableSize + vlogAllocStep + 1<<20 + o.MemTableSize
}

// MakePrivate makes dir and everything under it accessible to the
// owner only (directories 0700, files lose their group and other bits),
// whatever their modes were: the spool holds other
// people's mail. Symbolic links are left alone.
func MakePrivate(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // deleted meanwhile
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		mode := info.Mode().Perm()
		want := mode &^ 0o077
		if d.IsDir() {
			want = 0o700
		}
		if mode != want {
			if err := os.Chmod(path, want); err != nil {
				return err
			}
		}
		return nil
	})
}
