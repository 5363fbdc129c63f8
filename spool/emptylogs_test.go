package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// An empty WAL or value-log file, as a kill between Badger's creating
// and sizing it leaves behind, does not stop the spool from opening, and
// the mail stored before is all there.
func TestOpenAfterEmptyLogFile(t *testing.T) {
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, Options{Dir: dir})
			id := mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), []byte("x\r\n"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s2 := openT(t, Options{Dir: dir})
			checkBody(t, s2, id, []byte("x\r\n"))
			mustEnqueue(t, s2, env1(), rcpt1("<a@b.test>"), []byte("y\r\n"))
			if n := countMessages(t, s2); n != 2 {
				t.Errorf("%d messages, want 2", n)
			}
		})
	}
}
