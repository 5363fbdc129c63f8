package aliases

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var env = Env{
	IsLocal:   func(d string) bool { return d == "b.test" || d == "c.test" },
	IsMailbox: func(u string) bool { return u == "alice" || u == "bob" || u == "carol" },
	Delimiter: "+",
}

func mustParse(t *testing.T, text string) *Table {
	t.Helper()
	tab, err := Parse("aliases", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func show(ts []Target) []string {
	var out []string
	for _, t := range ts {
		s := t.String()
		if t.Mailbox {
			s = "mailbox:" + s
		}
		out = append(out, s)
	}
	return out
}

func TestExpand(t *testing.T) {
	tab := mustParse(t, `# team addresses
sales: alice, Bob@Partner.Test   # a comment
  carol                          # continues sales
info@b.test: bob
staff: sales, alice, dave@c.test
postmaster: alice
self: alice
alice: alice, alice@home.test
a#b: bob
@c.test: carol
list: sales+x
`)
	for _, tc := range []struct {
		addr    string
		want    []string
		aliased bool
	}{
		// alice is an alias too ("alice: alice, alice@home.test"): it expands.
		{"sales@b.test", []string{"mailbox:alice@b.test", "alice@home.test", "bob@partner.test", "mailbox:carol@b.test"}, true},
		{"SALES@C.TEST", []string{"mailbox:alice@c.test", "alice@home.test", "bob@partner.test", "mailbox:carol@c.test"}, true},
		{"info@b.test", []string{"mailbox:bob@b.test"}, true},
		{"info@c.test", []string{"mailbox:carol@c.test"}, true}, // info is only an alias at b.test: the catch-all of c.test
		// dave@c.test is nobody at c.test: its catch-all.
		{"staff@b.test", []string{"mailbox:alice@b.test", "alice@home.test", "bob@partner.test", "mailbox:carol@b.test", "mailbox:carol@c.test"}, true},
		{"bob@b.test", []string{"mailbox:bob@b.test"}, false},
		{"bob+lists@b.test", []string{"mailbox:bob@b.test"}, true},
		{"sales+q3@b.test", []string{"mailbox:alice@b.test", "alice@home.test", "bob@partner.test", "mailbox:carol@b.test"}, true},
		{"list@b.test", []string{"mailbox:alice@b.test", "alice@home.test", "bob@partner.test", "mailbox:carol@b.test"}, true},
		{"postmaster@b.test", []string{"mailbox:alice@b.test", "alice@home.test"}, true},
		{"alice@b.test", []string{"mailbox:alice@b.test", "alice@home.test"}, true},
		{"self@b.test", []string{"mailbox:alice@b.test", "alice@home.test"}, true},
		{"a#b@b.test", []string{"mailbox:bob@b.test"}, true},
		{"nobody@c.test", []string{"mailbox:carol@c.test"}, true},
		{"nobody+x@c.test", []string{"mailbox:carol@c.test"}, true},
	} {
		local, domain, _ := strings.Cut(tc.addr, "@")
		got, aliased, err := tab.Expand(Address{local, domain}, env)
		if err != nil || !reflect.DeepEqual(show(got), tc.want) || aliased != tc.aliased {
			t.Errorf("Expand(%s) = %v, %v, %v; want %v, %v", tc.addr, show(got), aliased, err, tc.want, tc.aliased)
		}
	}
	for _, addr := range []string{"nobody@b.test", "+x@b.test", "nobody+x@b.test"} {
		local, domain, _ := strings.Cut(addr, "@")
		if got, _, err := tab.Expand(Address{local, domain}, env); !errors.Is(err, ErrUnknown) {
			t.Errorf("Expand(%s) = %v, %v; want ErrUnknown", addr, show(got), err)
		}
	}
	// Without sub-addressing, the detail is part of the name.
	noDelim := env
	noDelim.Delimiter = ""
	if _, _, err := tab.Expand(Address{"bob+lists", "b.test"}, noDelim); !errors.Is(err, ErrUnknown) {
		t.Errorf("bob+lists without a delimiter: %v", err)
	}
}

func TestExpandLoops(t *testing.T) {
	tab := mustParse(t, "a: b\nb: c\nc: a\nd: d\ne: bob, e\n")
	for _, local := range []string{"a", "b", "d"} {
		_, _, err := tab.Expand(Address{local, "b.test"}, env)
		if !errors.Is(err, ErrLoop) {
			t.Errorf("Expand(%s) = %v; want a loop", local, err)
		}
	}
	_, _, err := tab.Expand(Address{"a", "b.test"}, env)
	if err == nil || !strings.Contains(err.Error(), "a@b.test → b@b.test → c@b.test → a@b.test") {
		t.Errorf("loop error %v does not show the chain", err)
	}
	// "e: bob, e" names itself with no mailbox e: a loop too.
	if _, _, err := tab.Expand(Address{"e", "b.test"}, env); !errors.Is(err, ErrLoop) {
		t.Errorf("Expand(e) = %v", err)
	}
	// A chain deeper than MaxDepth.
	var b strings.Builder
	for i := range MaxDepth + 1 {
		b.WriteString(strings.Repeat("x", i+1) + ": " + strings.Repeat("x", i+2) + "\n")
	}
	deep := mustParse(t, b.String()+strings.Repeat("x", MaxDepth+2)+": bob\n")
	if _, _, err := deep.Expand(Address{"x", "b.test"}, env); !errors.Is(err, ErrLoop) {
		t.Errorf("deep chain: %v", err)
	}
	// Too many targets.
	b.Reset()
	b.WriteString("big:")
	for i := range MaxTargets + 1 {
		b.WriteString(" u" + strings.Repeat("1", i%7) + "x" + string(rune('a'+i%26)) + "@r" + strings.Repeat("9", i/26) + ".test,")
	}
	big := mustParse(t, b.String()+"\n")
	if _, _, err := big.Expand(Address{"big", "b.test"}, env); !errors.Is(err, ErrTooMany) {
		t.Errorf("big alias: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for text, want := range map[string]string{
		"sales alice\n":              "aliases:1: want alias: address",
		"  alice\n":                  "aliases:1: a continuation line with no alias before it",
		"sales: alice\nsales: bob\n": "aliases:2: alias \"sales\" already defined on line 1",
		"sales:\n":                   "aliases:1: alias \"sales\" has no address",
		"sales: |/bin/sh\n":          "aliases:1: bad address \"|/bin/sh\"",
		"sales: :include:/x\n":       "aliases:1: bad address",
		"sa les: bob\n":              "aliases:1: alias \"sa les\": bad local part",
		"x@: bob\n":                  "aliases:1: alias \"x@\": bad domain",
		"x: bob@b..test\n":           "aliases:1: bad address \"bob@b..test\"",
	} {
		_, err := Parse("aliases", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v; want %q", text, err, want)
		}
	}
}

// The table follows its file: a new alias works after Reload, a broken
// file keeps the aliases in force, a removed file means none.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases")
	tab, err := Open(path, nil)
	if err != nil || tab.Len() != 0 {
		t.Fatalf("Open of a missing file: %v, %d", err, tab.Len())
	}
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		// Older than the racy window, so that Reload trusts the stat.
		old := time.Now().Add(-time.Minute)
		os.Chtimes(path, old, old)
	}
	write("sales: alice\n")
	if err := tab.Reload(); err != nil || !tab.IsAlias(Address{"sales", "b.test"}) {
		t.Fatalf("after adding sales: %v", err)
	}
	write("sales alice\n")
	if err := tab.Reload(); err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Fatalf("broken file: %v", err)
	}
	if !tab.IsAlias(Address{"sales", "b.test"}) {
		t.Error("a broken file dropped the aliases in force")
	}
	os.Remove(path)
	if err := tab.Reload(); err != nil || tab.Len() != 0 {
		t.Errorf("removed file: %v, %d aliases", err, tab.Len())
	}
}
