// Package filestamp tells a daemon whether a file it follows (the users
// file, the aliases file) changed since it last read it, at the cost of a
// stat when it did not: editors and `relay user` replace such files, and
// the daemon polls them.
package filestamp

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"time"
)

// racyWindow is how recent a file's modification time must be for Read to
// distrust an unchanged mtime and size: an edit within the file system's
// timestamp granularity can keep both (a new password's hash has the same
// length as the old one), so such a file is read and compared by content.
const racyWindow = 2 * time.Second

// Stamp identifies a version of a file. The zero Stamp is "never read".
type Stamp struct {
	exists  bool
	info    fs.FileInfo // nil when !exists
	readAt  time.Time   // when the content was read
	content [sha256.Size]byte
}

// Exists reports whether the file existed when the stamp was taken.
func (s Stamp) Exists() bool { return s.exists }

// Info is the file's stat at that time (nil when it did not exist).
func (s Stamp) Info() fs.FileInfo { return s.info }

// Read reads path unless it is the version old stamps (force reads it
// anyway). changed reports new content, in data, with its stamp in next;
// unchanged, data is nil and next may be a fresher stamp of the same
// content. A file that does not exist is an error wrapping
// fs.ErrNotExist.
func Read(path string, old Stamp, force bool) (data []byte, changed bool, next Stamp, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, false, Stamp{}, err
	}
	if !force && old.exists && sameFile(old.info, info) && info.ModTime().Before(old.readAt.Add(-racyWindow)) {
		return nil, false, old, nil // unchanged, and old enough for mtime to be trusted
	}
	readAt := time.Now()
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, false, old, err
	}
	next = Stamp{exists: true, info: info, readAt: readAt, content: sha256.Sum256(data)}
	if !force && old.exists && next.content == old.content {
		return nil, false, next, nil
	}
	return data, true, next, nil
}

// IsNotExist reports whether Read found no file.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// sameFile reports whether a and b describe the same file with the same
// size and modification time.
func sameFile(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
