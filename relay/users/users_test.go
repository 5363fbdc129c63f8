package users

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// cost keeps the tests fast; the CLI passes bcrypt.DefaultCost.
const cost = bcrypt.MinCost

func open(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db
}

func TestAddAuthenticate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "users") // the directory does not exist yet
	if err := Add(path, "Alice", "correct horse", cost); err != nil {
		t.Fatal(err)
	}
	if err := Add(path, "bob.smith_2-x", "hunter2", cost); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)

	for _, tt := range []struct {
		name, password string
		want           bool
	}{
		{"alice", "correct horse", true},
		{"ALICE", "correct horse", true}, // names are case-insensitive
		{"alice", "Correct horse", false},
		{"alice", "", false},
		{"bob.smith_2-x", "hunter2", true},
		{"bob.smith_2-x", "correct horse", false},
		{"carol", "correct horse", false}, // unknown user
		{"", "", false},
	} {
		if got := db.Authenticate(tt.name, tt.password); got != tt.want {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tt.name, tt.password, got, tt.want)
		}
	}
	if !db.Exists("Alice") || !db.Exists("alice") || db.Exists("carol") || db.Exists("") {
		t.Error("Exists disagrees with the file")
	}
	if got, want := db.Names(), []string{"alice", "bob.smith_2-x"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "alice:$2a$04$") || !strings.HasPrefix(lines[1], "bob.smith_2-x:$2a$04$") {
		t.Errorf("file content:\n%s", data)
	}
	if strings.Contains(string(data), "correct horse") {
		t.Error("the file holds a password in clear")
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	// Even a file that was world-readable comes out 0600 after an edit.
	if err := os.WriteFile(path, []byte("# users\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Add(path, "alice", "pw", cost); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", info.Mode().Perm())
	}
	// No temporary files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the users file", len(entries))
	}
}

func TestAddErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := Add(path, "alice", "pw", cost); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	for _, tt := range []struct {
		name, password string
		want           string
	}{
		{"ALICE", "pw", `user "alice" already exists`},
		{"", "pw", "user name is empty"},
		{"a b", "pw", `user name "a b" has a character other than`},
		{"alice@b.test", "pw", `user name "alice@b.test" has a character other than`},
		{"jos\u00e9", "pw", "has a character other than"},
		{"a:b", "pw", "has a character other than"},
		{strings.Repeat("x", 65), "pw", "longer than 64 characters"},
		{"carol", "", "password is empty"},
		{"carol", strings.Repeat("p", 73), "longer than bcrypt's 72 bytes"},
	} {
		err := Add(path, tt.name, tt.password, cost)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Add(%q) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if err := Add(path, "carol", "pw", bcrypt.MaxCost+1); err == nil {
		t.Error("Add with cost above bcrypt.MaxCost succeeded")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Errorf("failed adds changed the file:\n%s", after)
	}

	// 64 characters is still fine.
	if err := Add(path, strings.Repeat("x", 64), "pw", cost); err != nil {
		t.Errorf("Add(64 chars) = %v", err)
	}
}

func TestNormalizeName(t *testing.T) {
	if n, err := NormalizeName("Bob.Smith_2-X"); err != nil || n != "bob.smith_2-x" {
		t.Errorf("NormalizeName = %q, %v", n, err)
	}
	// Unicode case folding must not map a foreign letter onto an ASCII name
	// (K is U+212A KELVIN SIGN, which folds to k).
	if _, err := NormalizeName("\u212Aate"); err == nil {
		t.Error("NormalizeName accepted a non-ASCII name")
	}
}

func TestSetPasswordAndDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	content := "# relay users\n\nalice:" + hash(t, "old") + "\n# bob is the admin\nbob:" + hash(t, "bobpw") + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := SetPassword(path, "Alice", "new", cost); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)
	if db.Authenticate("alice", "old") || !db.Authenticate("alice", "new") || !db.Authenticate("bob", "bobpw") {
		t.Error("SetPassword did not change exactly alice's password")
	}

	if err := SetPassword(path, "carol", "x", cost); err == nil || !strings.Contains(err.Error(), `no user "carol"`) {
		t.Errorf("SetPassword(missing user) = %v", err)
	}
	if err := Delete(path, "carol"); err == nil || !strings.Contains(err.Error(), `no user "carol"`) {
		t.Errorf("Delete(missing user) = %v", err)
	}

	if err := Delete(path, "ALICE"); err != nil {
		t.Fatal(err)
	}
	db = open(t, path)
	if db.Exists("alice") || db.Authenticate("alice", "new") || !db.Exists("bob") {
		t.Errorf("after Delete: Names() = %q", db.Names())
	}
	// Comments and blank lines survive edits.
	data, _ := os.ReadFile(path)
	if want := "# relay users\n\n# bob is the admin\nbob:"; !strings.HasPrefix(string(data), want) {
		t.Errorf("file after edits:\n%s\nwant it to start with\n%s", data, want)
	}

	missing := filepath.Join(t.TempDir(), "users")
	if err := SetPassword(missing, "bob", "x", cost); err == nil {
		t.Error("SetPassword on a missing file succeeded")
	}
	if err := Delete(missing, "bob"); err == nil {
		t.Error("Delete on a missing file succeeded")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Error("a failed edit created the file")
	}
}

func hash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	db := open(t, path)
	if len(db.Names()) != 0 || db.Exists("alice") || db.Authenticate("alice", "pw") {
		t.Error("a missing file is not an empty table")
	}
	// Created later, it is picked up by Reload.
	if err := Add(path, "alice", "pw", cost); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatal(err)
	}
	if !db.Authenticate("alice", "pw") {
		t.Error("Reload did not pick up the new file")
	}
	// Removed, the table is empty again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatal(err)
	}
	if db.Exists("alice") {
		t.Error("Reload kept users of a removed file")
	}

	// users_file = "" in the config: no users, no error.
	db = open(t, "")
	if err := db.Reload(); err != nil || len(db.Names()) != 0 {
		t.Errorf("Open(\"\"): Reload = %v, Names = %q", err, db.Names())
	}
}

// An edit right after the daemon read the file keeps its size (hashes have
// one length) and may keep its mtime; Reload must still see it.
func TestReloadPicksUpChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := Add(path, "alice", "one", cost); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)
	if err := SetPassword(path, "alice", "two", cost); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatal(err)
	}
	if db.Authenticate("alice", "one") || !db.Authenticate("alice", "two") {
		t.Error("Reload missed a password change")
	}
	if err := Add(path, "bob", "three", cost); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := db.Names(), []string{"alice", "bob"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	// Reloading an unchanged file is harmless.
	if err := db.Reload(); err != nil || !db.Authenticate("bob", "three") {
		t.Errorf("second Reload: %v", err)
	}
}

func TestMalformedFile(t *testing.T) {
	good := hash(t, "pw")
	for _, tt := range []struct {
		name, content, want string
	}{
		{"no colon", "# c\nalice " + good + "\n", ":2: want name:bcrypt-hash"},
		{"bad name", "\n\n\nal ice:" + good + "\n", `:4: user name "al ice" has a character other than`},
		{"bad hash", "alice:" + good + "\nbob:plaintext\n", `:2: user "bob": not a bcrypt hash`},
		{"empty hash", "alice:\n", `:1: user "alice": not a bcrypt hash`},
		{"duplicate", "alice:" + good + "\n#\nALICE:" + good + "\n", `:3: user "alice" already defined on line 1`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, nil)
			if err == nil || !strings.HasPrefix(err.Error(), path+tt.want) {
				t.Errorf("Open = %v, want an error starting with %q", err, path+tt.want)
			}
			// Nor will the editors rewrite a file they do not understand.
			if err := Add(path, "zed", "pw", cost); err == nil {
				t.Error("Add rewrote a malformed file")
			}
		})
	}
}

// A bad edit made while the daemon runs must not lock everyone out.
func TestReloadKeepsTableOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := Add(path, "alice", "pw", cost); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)
	if err := os.WriteFile(path, []byte("alice:"+hash(t, "new")+"\nbob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := db.Reload()
	if err == nil || err.Error() != path+":2: want name:bcrypt-hash" {
		t.Fatalf("Reload = %v, want %s:2: want name:bcrypt-hash", err, path)
	}
	if !db.Authenticate("alice", "pw") || db.Authenticate("alice", "new") {
		t.Error("a failed Reload changed the table")
	}
	// Once fixed, the next Reload takes it.
	if err := os.WriteFile(path, []byte("alice:"+hash(t, "new")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Reload(); err != nil {
		t.Fatal(err)
	}
	if !db.Authenticate("alice", "new") {
		t.Error("Reload after the fix did not take the new table")
	}
}

// Readers never see a half-written file while it is edited.
func TestConcurrentReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := Add(path, "alice", "pw", cost); err != nil {
		t.Fatal(err)
	}
	db := open(t, path)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reloadErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := db.Reload(); err != nil {
				reloadErr = err
				return
			}
			if !db.Exists("alice") {
				reloadErr = os.ErrNotExist
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if err := SetPassword(path, "alice", "pw", cost); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if reloadErr != nil {
		t.Errorf("a reader saw a broken file: %v", reloadErr)
	}
}

func TestDummyHash(t *testing.T) {
	// Authenticate's timing defence is only as good as this constant: it
	// must be a real hash at the cost real users get.
	c, err := bcrypt.Cost([]byte(dummyHash))
	if err != nil || c != bcrypt.DefaultCost {
		t.Errorf("bcrypt.Cost(dummyHash) = %d, %v; want %d", c, err, bcrypt.DefaultCost)
	}
}

func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		content, want string
	}{
		{"secret\n", "secret"},
		{"secret", "secret"},
		{"secret\r\nsecond line\n", "secret"},
		{" spaced out \n", " spaced out "},
	} {
		path := filepath.Join(dir, "pw")
		if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPasswordFile(path)
		if err != nil || got != tt.want {
			t.Errorf("ReadPasswordFile(%q) = %q, %v; want %q", tt.content, got, err, tt.want)
		}
	}
	for _, content := range []string{"", "\n", "\r\n", "\nsecret\n"} {
		path := filepath.Join(dir, "pw")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadPasswordFile(path); err == nil {
			t.Errorf("ReadPasswordFile(%q) = %q, want an error", content, got)
		}
	}
	if _, err := ReadPasswordFile(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("ReadPasswordFile(missing) = %v", err)
	}
}
