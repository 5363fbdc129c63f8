// Package aliases is the relay's table of address aliases (aliases_file):
// addresses of the local domains that stand for other addresses, local
// mailboxes or remote ones, the way /etc/aliases and Postfix's virtual
// aliases do. The daemon reads the file (Open) and follows changes to it
// (Reload), as it does the users file.
//
// File format, one alias a line; blank lines and lines starting with '#'
// are ignored, and a line starting with a space or tab continues the
// targets of the line before:
//
//	sales: alice, bob@partner.test    # sales@ every local domain
//	info@b.test: alice                # only info@b.test
//	@b.test: catchall                 # any other address at b.test
//
// A target without a domain is a local part in the domain of the address
// being expanded; a target may be another alias. Keys and targets are
// compared without regard to case.
//
// Expansion (Table.Expand) tries, for local@domain: the alias
// local@domain, the alias local, a mailbox of that name, the same
// without the sub-address detail (alice+lists is alice), then the
// catch-all @domain. It stops at mailboxes and remote addresses, drops
// repeated targets, and reports a loop (an alias that reaches itself
// without a mailbox of its name, or more than MaxDepth aliases deep).
package aliases

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/filestamp"
)

// MaxDepth bounds the chain of aliases one expansion follows.
const MaxDepth = 16

// MaxTargets bounds the addresses one expansion yields (Postfix's
// virtual_alias_expansion_limit is 1000).
const MaxTargets = 1000

// ErrUnknown is returned by Expand for an address that is neither an
// alias nor a mailbox and has no catch-all.
var ErrUnknown = errors.New("aliases: no such address")

// ErrLoop is returned (wrapped) by Expand when an alias reaches itself.
var ErrLoop = errors.New("aliases: alias loop")

// ErrTooMany is returned (wrapped) by Expand when an alias yields more
// than MaxTargets addresses.
var ErrTooMany = errors.New("aliases: alias expands to too many addresses")

// Address is a local part and a domain, both lower case.
type Address struct {
	Local, Domain string
}

func (a Address) String() string { return a.Local + "@" + a.Domain }

// Target is one address an expansion yields.
type Target struct {
	Address
	// Mailbox is set for a local mailbox (Local is the user name), clear
	// for a remote address or one of a local domain that no mailbox of
	// this relay has.
	Mailbox bool
}

// Env is what Expand needs to know about the relay.
type Env struct {
	// IsLocal reports whether a domain is one of local_domains.
	IsLocal func(domain string) bool
	// IsMailbox reports whether a user (lower-case local part) has a
	// mailbox here.
	IsMailbox func(user string) bool
	// Delimiter separates a sub-address detail ("+"); "" for none.
	Delimiter string
}

// table is one version of the file.
type table struct {
	exact    map[string][]string // "local@domain" → targets
	bare     map[string][]string // "local" → targets
	catchAll map[string][]string // "domain" → targets
}

// Table is the aliases file as last read; safe for concurrent use.
type Table struct {
	path   string
	logger *slog.Logger

	loadMu sync.Mutex
	mu     sync.RWMutex
	t      table
	stamp  filestamp.Stamp
}

// Open reads the aliases file at path. A missing file (or path "") is an
// empty table, which Reload fills once the file appears.
func Open(path string, logger *slog.Logger) (*Table, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{path: path, logger: logger, t: emptyTable()}
	if err := t.load(true); err != nil {
		return nil, err
	}
	return t, nil
}

func emptyTable() table {
	return table{exact: map[string][]string{}, bare: map[string][]string{}, catchAll: map[string][]string{}}
}

// Reload re-reads the file if it changed. A malformed file leaves the
// aliases in force and returns an error naming the file and line.
func (t *Table) Reload() error { return t.load(false) }

// Len is the number of aliases.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.t.exact) + len(t.t.bare) + len(t.t.catchAll)
}

func (t *Table) load(first bool) error {
	if t.path == "" {
		return nil
	}
	t.loadMu.Lock()
	defer t.loadMu.Unlock()
	t.mu.RLock()
	old := t.stamp
	t.mu.RUnlock()
	data, changed, next, err := filestamp.Read(t.path, old, first)
	if filestamp.IsNotExist(err) {
		if old.Exists() {
			t.logger.Warn("aliases file was removed; no aliases", "path", t.path)
		}
		t.mu.Lock()
		t.t, t.stamp = emptyTable(), filestamp.Stamp{}
		t.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("aliases: %w", err)
	}
	if !changed {
		t.mu.Lock()
		t.stamp = next
		t.mu.Unlock()
		return nil
	}
	tab, err := Parse(t.path, data)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.t, t.stamp = tab.t, next
	t.mu.Unlock()
	if !first {
		t.logger.Info("aliases file reloaded", "path", t.path, "aliases", t.Len())
	}
	return nil
}

// Parse reads an aliases file's content; name is used in errors. The
// result does not follow any file.
func Parse(name string, data []byte) (*Table, error) {
	tab := emptyTable()
	where := map[string]int{} // key → line, for duplicates
	var key string            // of the entry a continuation line extends
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		text := stripComment(strings.TrimSuffix(sc.Text(), "\r"))
		if strings.TrimSpace(text) == "" {
			continue
		}
		targets := text
		if text[0] == ' ' || text[0] == '\t' {
			if key == "" {
				return nil, fmt.Errorf("%s:%d: a continuation line with no alias before it", name, n)
			}
		} else {
			k, rest, ok := strings.Cut(text, ":")
			if !ok {
				return nil, fmt.Errorf("%s:%d: want alias: address, address, ...", name, n)
			}
			var err error
			if key, err = parseKey(strings.TrimSpace(k)); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			if prev, dup := where[key]; dup {
				return nil, fmt.Errorf("%s:%d: alias %q already defined on line %d", name, n, key, prev)
			}
			where[key] = n
			targets = rest
		}
		for _, f := range strings.Split(targets, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			tg, err := parseTarget(f)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			tab.add(key, tg)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for k, line := range where {
		if len(tab.get(k)) == 0 {
			return nil, fmt.Errorf("%s:%d: alias %q has no address", name, line, k)
		}
	}
	return &Table{t: tab}, nil
}

// stripComment removes a comment: '#' at the start of the line or after
// a space or tab ('#' may be part of a local part).
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}

// add appends a target to the entry of key ("local", "local@domain" or
// "@domain").
func (t *table) add(key, target string) {
	switch local, domain, ok := strings.Cut(key, "@"); {
	case !ok:
		t.bare[key] = append(t.bare[key], target)
	case local == "":
		t.catchAll[domain] = append(t.catchAll[domain], target)
	default:
		t.exact[key] = append(t.exact[key], target)
	}
}

func (t *table) get(key string) []string {
	switch local, domain, ok := strings.Cut(key, "@"); {
	case !ok:
		return t.bare[key]
	case local == "":
		return t.catchAll[domain]
	default:
		return t.exact[key]
	}
}

// parseKey checks an alias name: a local part, local@domain, or @domain.
func parseKey(k string) (string, error) {
	k = strings.ToLower(k)
	local, domain, hasAt := strings.Cut(k, "@")
	switch {
	case k == "":
		return "", errors.New("empty alias name")
	case hasAt && (domain == "" || !validAddress("postmaster", domain)):
		return "", fmt.Errorf("alias %q: bad domain", k)
	case hasAt && local == "":
		return k, nil // a catch-all
	case !validAddress(local, ""):
		return "", fmt.Errorf("alias %q: bad local part", k)
	}
	return k, nil
}

// parseTarget checks a target: a local part or local@domain.
func parseTarget(f string) (string, error) {
	f = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(f, "<"), ">"))
	local, domain, hasAt := strings.Cut(f, "@")
	// '|' and '/' are atext, but here they would read as /etc/aliases'
	// pipes and files, which this relay does not deliver to.
	if !validAddress(local, domain) || hasAt && domain == "" || strings.ContainsAny(f[:1], "|/:") {
		return "", fmt.Errorf("bad address %q (want user or user@domain; no pipes, files or :include:)", f)
	}
	return f, nil
}

// validAddress checks a local part and a domain ("" for none) with the
// SMTP path parser: a dot-string local part (no quotes, which the
// file's commas would split) and a domain name (no address literal).
func validAddress(local, domain string) bool {
	if local == "" || strings.ContainsAny(local+domain, "\"[]") {
		return false
	}
	if domain == "" {
		domain = "example.invalid" // the local part alone is checked
	}
	p, err := envelope.ParseForwardPath("<"+local+"@"+domain+">", true)
	return err == nil && len(p.Route) == 0
}

// Expand resolves an address of a local domain to where its mail goes.
// It returns ErrUnknown for an address that is nothing here, and errors
// wrapping ErrLoop or ErrTooMany for a broken alias. aliased reports
// whether an alias, a detail or a catch-all was involved, that is
// whether the targets are anything but the address itself.
func (t *Table) Expand(a Address, env Env) (targets []Target, aliased bool, err error) {
	t.mu.RLock()
	tab := t.t
	t.mu.RUnlock()
	x := expansion{tab: &tab, env: env, seen: map[Address]bool{}}
	a = Address{strings.ToLower(a.Local), strings.ToLower(a.Domain)}
	if err := x.resolve(a, nil); err != nil {
		return nil, false, err
	}
	aliased = len(x.out) != 1 || !x.out[0].Mailbox || x.out[0].Address != a || x.viaAlias
	return x.out, aliased, nil
}

// IsAlias reports whether local@domain has an alias entry of its own (not
// a catch-all).
func (t *Table) IsAlias(a Address) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.t.exact[a.String()] != nil || t.t.bare[a.Local] != nil
}

type expansion struct {
	tab      *table
	env      Env
	seen     map[Address]bool // targets already in out
	out      []Target
	viaAlias bool
}

// resolve adds where a goes to x.out; path holds the aliases being
// expanded, outermost first.
func (x *expansion) resolve(a Address, path []Address) error {
	if !x.env.IsLocal(a.Domain) {
		return x.emit(Target{Address: a})
	}
	for _, p := range path {
		if p == a {
			// An alias that names itself means its own mailbox, as in
			// /etc/aliases ("alice: alice, alice@elsewhere"); without
			// one it is a loop.
			if x.isMailbox(a.Local) {
				return x.emit(Target{Address: a, Mailbox: true})
			}
			return fmt.Errorf("%w: %s reaches itself (%s)", ErrLoop, a, chain(append(path, a)))
		}
	}
	if len(path) >= MaxDepth {
		return fmt.Errorf("%w: more than %d aliases deep (%s)", ErrLoop, MaxDepth, chain(append(path, a)))
	}
	if targets := x.tab.exact[a.String()]; targets != nil {
		return x.expand(a, a.Domain, targets, path)
	}
	if targets := x.tab.bare[a.Local]; targets != nil {
		return x.expand(a, a.Domain, targets, path)
	}
	if x.isMailbox(a.Local) {
		return x.emit(Target{Address: a, Mailbox: true})
	}
	if d := x.env.Delimiter; d != "" {
		if i := strings.Index(a.Local, d); i > 0 {
			base := Address{a.Local[:i], a.Domain}
			if x.tab.exact[base.String()] != nil || x.tab.bare[base.Local] != nil || x.isMailbox(base.Local) {
				x.viaAlias = true
				return x.resolve(base, path)
			}
		}
	}
	if targets := x.tab.catchAll[a.Domain]; targets != nil {
		return x.expand(a, a.Domain, targets, path)
	}
	if len(path) > 0 {
		// A target of an alias that names nothing here: kept, so that its
		// mail fails with a DSN to the sender rather than vanish.
		return x.emit(Target{Address: a})
	}
	return ErrUnknown
}

// expand resolves the targets of alias a; a bare target takes domain.
func (x *expansion) expand(a Address, domain string, targets []string, path []Address) error {
	x.viaAlias = true
	path = append(path, a)
	for _, tg := range targets {
		local, dom, ok := strings.Cut(tg, "@")
		if !ok {
			dom = domain
		}
		if err := x.resolve(Address{local, dom}, path); err != nil {
			return err
		}
	}
	return nil
}

func (x *expansion) emit(t Target) error {
	if x.seen[t.Address] {
		return nil
	}
	if len(x.out) >= MaxTargets {
		return fmt.Errorf("%w (more than %d)", ErrTooMany, MaxTargets)
	}
	x.seen[t.Address] = true
	x.out = append(x.out, t)
	return nil
}

func (x *expansion) isMailbox(user string) bool {
	return user == "postmaster" || x.env.IsMailbox != nil && x.env.IsMailbox(user)
}

func chain(path []Address) string {
	s := make([]string, len(path))
	for i, a := range path {
		s[i] = a.String()
	}
	return strings.Join(s, " → ")
}
