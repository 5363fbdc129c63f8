// Package users is the relay's table of users: the accounts that may AUTH
// to submit mail and log in to POP3 to read their mailbox. The table lives
// in a text file of name:bcrypt-hash lines, which the daemon reads (DB) and
// `relay user add` edits (Add, SetPassword, Delete) by atomic replacement,
// so that the daemon never sees a half-written file.
//
// File format: one user per line as "name:hash", where hash is a bcrypt
// hash ("$2a$10$..."); blank lines and lines starting with '#' are ignored.
// Names are 1 to 64 characters of [a-z0-9._-], compared case-insensitively
// and stored in lower case.
package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/relay-mta/relay/relay/filestamp"
	"golang.org/x/crypto/bcrypt"
)

// dummyHash is compared against when a login names no known user, so that
// a failed login costs the same bcrypt work whether or not the user exists
// and response times do not reveal valid names. Its cost is
// bcrypt.DefaultCost, the cost `relay user add` uses. No password matches
// it in practice, and it is only ever used to fail.
const dummyHash = "$2a$10$8Hv6iPwhO5/vccWAVlwOduD3jdkg5gm6rRvcdWXtI/OGNu3MSjEzW"

// maxNameLen is the longest user name.
const maxNameLen = 64

// DB is the users table as read from the users file. It is safe for
// concurrent use; Reload swaps the table atomically.
type DB struct {
	path   string
	logger *slog.Logger

	// loadMu serialises loads, so that a slow read of an old version can
	// not overwrite the table from a newer one.
	loadMu sync.Mutex

	mu    sync.RWMutex
	users map[string][]byte // lower-case name → bcrypt hash
	stamp filestamp.Stamp   // what the file looked like when users was read
}

// Open reads the users file at path. A missing file is an empty table, not
// an error: a relay with no users still relays for its networks, and the
// file can be created later and picked up by Reload. An empty path (the
// config's users_file = "") is an empty table for good. logger may be nil.
func Open(path string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db := &DB{path: path, logger: logger, users: map[string][]byte{}}
	if err := db.load(true); err != nil {
		return nil, err
	}
	return db, nil
}

// Exists reports whether a user named name exists; case does not matter.
func (db *DB) Exists(name string) bool {
	n := lowerASCII(name)
	db.mu.RLock()
	defer db.mu.RUnlock()
	_, ok := db.users[n]
	return ok
}

// Authenticate reports whether password is name's password. It runs a
// bcrypt comparison even when name does not exist, so that the time it
// takes does not tell an attacker which names are valid.
func (db *DB) Authenticate(name, password string) bool {
	n := lowerASCII(name)
	db.mu.RLock()
	hash, ok := db.users[n]
	db.mu.RUnlock()
	if !ok {
		_ = bcrypt.CompareHashAndPassword([]byte(dummyHash), []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}

// Names returns the user names, sorted.
func (db *DB) Names() []string {
	db.mu.RLock()
	defer db.mu.RUnlock()
	names := make([]string, 0, len(db.users))
	for n := range db.users {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Reload re-reads the users file if it changed since it was last read. On
// a malformed file it keeps the current table and returns an error naming
// the file and line, so that a typo made while the daemon runs does not
// lock every user out. A file that was removed empties the table.
func (db *DB) Reload() error {
	return db.load(false)
}

// load reads the file into the table, unless it is unchanged since the
// last read (and first is false).
func (db *DB) load(first bool) error {
	if db.path == "" {
		return nil
	}
	db.loadMu.Lock()
	defer db.loadMu.Unlock()
	db.mu.RLock()
	old := db.stamp
	db.mu.RUnlock()
	data, changed, newStamp, err := filestamp.Read(db.path, old, first)
	if filestamp.IsNotExist(err) {
		db.mu.Lock()
		defer db.mu.Unlock()
		if first {
			db.logger.Info("users file does not exist; no users", "path", db.path)
		} else if old.Exists() {
			db.logger.Warn("users file was removed; no users", "path", db.path)
		}
		db.users = map[string][]byte{}
		db.stamp = filestamp.Stamp{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if !changed {
		db.mu.Lock()
		db.stamp = newStamp
		db.mu.Unlock()
		return nil
	}
	entries, err := parse(db.path, data)
	if err != nil {
		return err
	}
	users := make(map[string][]byte, len(entries))
	for _, e := range entries {
		if e.name != "" {
			users[e.name] = []byte(e.hash)
		}
	}
	if info := newStamp.Info(); info.Mode().Perm()&0o077 != 0 {
		db.logger.Warn("users file is readable by others; it should be mode 0600", "path", db.path, "mode", info.Mode().Perm().String())
	}
	db.mu.Lock()
	db.users = users
	db.stamp = newStamp
	db.mu.Unlock()
	if !first {
		db.logger.Info("users file reloaded", "path", db.path, "users", len(users))
	}
	return nil
}

// line is one line of a users file: a user (name and hash set) or anything
// else kept verbatim (text), so that editing keeps comments in place.
type line struct {
	name string
	hash string
	text string
}

// parse reads a users file; name is used in errors.
func parse(name string, data []byte) ([]line, error) {
	var lines []line
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		raw := strings.TrimSuffix(sc.Text(), "\r")
		t := strings.TrimSpace(raw)
		if t == "" || strings.HasPrefix(t, "#") {
			lines = append(lines, line{text: raw})
			continue
		}
		user, hash, ok := strings.Cut(t, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want name:bcrypt-hash", name, n)
		}
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		norm, err := NormalizeName(user)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: not a bcrypt hash: %w", name, n, norm, err)
		}
		if prev, dup := seen[norm]; dup {
			return nil, fmt.Errorf("%s:%d: user %q already defined on line %d", name, n, norm, prev)
		}
		seen[norm] = n
		lines = append(lines, line{name: norm, hash: hash})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return lines, nil
}

// NormalizeName returns name in lower case if it is a valid user name:
// 1 to 64 characters of [a-z0-9._-] once lower-cased. The characters are
// those safe in a file line, a log line and a mailbox key alike.
func NormalizeName(name string) (string, error) {
	n := lowerASCII(name)
	if n == "" {
		return "", errors.New("user name is empty")
	}
	if len(n) > maxNameLen {
		return "", fmt.Errorf("user name %q is longer than %d characters", name, maxNameLen)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "", fmt.Errorf("user name %q has a character other than a-z, 0-9, '.', '_' and '-'", name)
		}
	}
	return n, nil
}

// lowerASCII lower-cases ASCII letters only: names are ASCII, and Unicode
// case folding could make two different byte strings the same user.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Add adds user name with password to the users file at path, creating the
// file (mode 0600) and its directory if needed. It fails if the user
// exists. cost is the bcrypt cost; 0 means bcrypt.DefaultCost.
func Add(path, name, password string, cost int) error {
	n, err := NormalizeName(name)
	if err != nil {
		return err
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return err
	}
	return edit(path, true, func(lines []line) ([]line, error) {
		for _, l := range lines {
			if l.name == n {
				return nil, fmt.Errorf("users: %s: user %q already exists", path, n)
			}
		}
		return append(lines, line{name: n, hash: hash}), nil
	})
}

// SetPassword changes the password of user name in the users file at path.
// It fails if the user does not exist. cost is the bcrypt cost; 0 means
// bcrypt.DefaultCost.
func SetPassword(path, name, password string, cost int) error {
	n, err := NormalizeName(name)
	if err != nil {
		return err
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return err
	}
	return edit(path, false, func(lines []line) ([]line, error) {
		for i := range lines {
			if lines[i].name == n {
				lines[i].hash = hash
				return lines, nil
			}
		}
		return nil, fmt.Errorf("users: %s: no user %q", path, n)
	})
}

// Delete removes user name from the users file at path. It fails if the
// user does not exist.
func Delete(path, name string) error {
	n, err := NormalizeName(name)
	if err != nil {
		return err
	}
	return edit(path, false, func(lines []line) ([]line, error) {
		for i := range lines {
			if lines[i].name == n {
				return append(lines[:i], lines[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("users: %s: no user %q", path, n)
	})
}

// hashPassword checks a new password and hashes it.
func hashPassword(password string, cost int) (string, error) {
	if password == "" {
		return "", errors.New("users: password is empty")
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return "", fmt.Errorf("users: bcrypt cost %d is outside %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return "", errors.New("users: password is longer than bcrypt's 72 bytes")
	}
	if err != nil {
		return "", fmt.Errorf("users: hashing password: %w", err)
	}
	return string(hash), nil
}

// edit reads the users file at path, applies change to its lines and
// replaces the file atomically: a crash leaves the old file or the new one,
// and a reader (the daemon's Reload) sees one or the other, never a mix.
// A missing file counts as empty when create is true and is an error
// otherwise. Concurrent edits are not serialised: the last one wins.
func edit(path string, create bool, change func([]line) ([]line, error)) error {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		data = nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("users: %s does not exist", path)
	case err != nil:
		return fmt.Errorf("users: %w", err)
	}
	// A file that does not parse is not rewritten: the edit could lose
	// whatever the bad line was meant to be.
	lines, err := parse(path, data)
	if err != nil {
		return err
	}
	if lines, err = change(lines); err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, l := range lines {
		if l.name != "" {
			buf.WriteString(l.name + ":" + l.hash + "\n")
		} else {
			buf.WriteString(l.text + "\n")
		}
	}
	return writeFileAtomic(path, buf.Bytes())
}

// writeFileAtomic writes data to path with mode 0600 through a temporary
// file in the same directory, synced before it is renamed over path, and
// syncs the directory so that the rename itself survives a crash.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	// The data directory may not exist yet when users are added before the
	// daemon first runs.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp already uses 0600; Chmod states the intent and does not
	// depend on that.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("users: writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("users: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("users: closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("users: syncing directory %s: %w", dir, err)
	}
	return nil
}

// ReadPasswordFile returns the first line of the file at path, without its
// line ending, for --password-file options: a password in a file stays out
// of the process list and shell history. Spaces are kept; they may be part
// of the password.
func ReadPasswordFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	pw := strings.TrimSuffix(string(first), "\r")
	if pw == "" {
		return "", fmt.Errorf("password file %s: first line is empty", path)
	}
	return pw, nil
}
