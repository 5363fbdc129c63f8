package spool

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every write transaction of the package is a wtxn: a write that went
// around it could put a value in the value log that the next sync skips.
// This reads the package's source for the ways around it.
func TestWritesGoThroughWtxn(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "wtxn.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				switch sel.Sel.Name {
				case "NewTransaction":
					if len(n.Args) != 1 || !isIdent(n.Args[0], "false") {
						t.Errorf("%s: a read-write Badger transaction: use newWriteTxn", fset.Position(n.Pos()))
					}
				case "Update", "NewWriteBatch", "NewManagedWriteBatch", "NewStreamWriter":
					t.Errorf("%s: %s writes around wtxn: use update or newWriteTxn", fset.Position(n.Pos()), sel.Sel.Name)
				}
			case *ast.SelectorExpr:
				if n.Sel.Name == "Txn" && !isIdent(n.X, "badger") {
					t.Errorf("%s: the Badger transaction inside a wtxn is for wtxn.go alone", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// A sync after commits of small values syncs the write-ahead log alone;
// one after a commit that put a value in the value log syncs both, and
// only once.
func TestSyncSkipsCleanValueLog(t *testing.T) {
	s := openT(t, Options{History: time.Hour})
	full := func() int {
		s.walMu.Lock()
		defer s.walMu.Unlock()
		return s.fullSyncs
	}
	ctx := context.Background()
	small := []byte("Subject: small\r\n\r\nhello\r\n")
	big := make([]byte, 3*valueThreshold/2)
	mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), small)
	before := full()
	mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), small)
	if got := full(); got != before {
		t.Errorf("small message: %d full syncs, want 0", got-before)
	}
	id := mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), big)
	if got := full(); got != before+1 {
		t.Errorf("big message: %d full syncs, want 1", got-before)
	}
	mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), small)
	if got := full(); got != before+1 {
		t.Errorf("small message after a big one: %d full syncs, want 1 in all", got-before)
	}
	// A mailbox delivery of the big body writes it to the value log again.
	res := []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok", Mailbox: "u", MailboxHeader: []byte("X: y\r\n")}}
	if _, err := s.Record(ctx, id, res, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.waitDurable(ctx); err != nil {
		t.Fatal(err)
	}
	if got := full(); got != before+2 {
		t.Errorf("big mailbox delivery: %d full syncs, want 2 in all", got-before)
	}
	// What was stored is all there after a reopen.
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openT(t, Options{Dir: dir})
	if n := countMessages(t, s2); n != 3 {
		t.Errorf("%d messages after reopen, want 3", n)
	}
	box, err := s2.Mailbox("u")
	if err != nil || len(box) != 1 {
		t.Fatalf("mailbox after reopen: %+v, %v", box, err)
	}
	if got, err := s2.MailboxMessage("u", box[0].Seq); err != nil || len(got) != len(big)+len("X: y\r\n") {
		t.Errorf("mailbox message after reopen: %d bytes, %v", len(got), err)
	}
}
