package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one mistake in a configuration file. Load returns an *Error, or
// several joined with errors.Join (each on its own line) when the file has
// more than one mistake; errors.As finds them either way.
type Error struct {
	// File is the config file's path as given to Load, or "defaults.toml"
	// for a value that comes from the embedded defaults.
	File string
	// Line is 1-based; 0 when the mistake has no single place.
	Line int
	// Column is 1-based and set only for TOML syntax errors.
	Column int
	// Key is the dotted key at fault, with array indexes
	// ("queue.retry_min", "route[1].to"); "" for syntax errors.
	Key string
	// Msg says what is wrong; it starts with the key when there is one.
	Msg string
}

// Error formats the error as file:line[:column]: message, the form editors
// and compilers use, so that the place can be jumped to.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Default returns the embedded defaults (defaults.toml), with data_dir
// resolved against the working directory.
func Default() *Config {
	cfg, err := build("", nil)
	if err != nil {
		// defaults.toml is part of the program and a test loads it; failing
		// here is a build defect, not a user's mistake.
		panic("config: embedded defaults.toml: " + err.Error())
	}
	return cfg
}

// Load reads the TOML file at path over the defaults: keys absent from the
// file keep their default values. Unknown keys, values of the wrong type and
// invalid values are errors naming the file, the line and the key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return build(path, data)
}

// build decodes the defaults, then the file if there is one, then checks
// and converts the result. path is "" for the defaults alone.
func build(path string, data []byte) (*Config, error) {
	var fc fileConfig
	defIdx, err := decode(defaultsName, defaultsTOML, &fc)
	if err != nil {
		return nil, err
	}
	v := &validator{defaults: source{defaultsName, defIdx}}
	if path != "" {
		fileIdx, err := decode(path, data, &fc)
		if err != nil {
			return nil, err
		}
		v.file = source{path, fileIdx}
	}
	cfg := v.build(&fc, path)
	if len(v.errs) > 0 {
		return nil, v.err()
	}
	return cfg, nil
}

// fileConfig is the file's layout as go-toml decodes it. Values that need
// parsing are kept as written (strings, or any for sizes, which may be a
// number or a string) so that the validator can report them with their
// position; decoding straight into time.Duration would lose that.
type fileConfig struct {
	Hostname          string              `toml:"hostname"`
	Aliases           []string            `toml:"aliases"`
	DataDir           string              `toml:"data_dir"`
	LocalDomains      []string            `toml:"local_domains"`
	RelayDomains      []string            `toml:"relay_domains"`
	RelayNetworks     []string            `toml:"relay_networks"`
	UsersFile         string              `toml:"users_file"`
	SourceRoutes      string              `toml:"source_routes"`
	PercentHack       bool                `toml:"percent_hack"`
	RouteLiterals     bool                `toml:"route_literals"`
	MaxHops           int64               `toml:"max_hops"`
	AllowInsecureAuth bool                `toml:"allow_insecure_auth"`
	SenderDomains     map[string][]string `toml:"sender_domains"`
	AliasesFile       string              `toml:"aliases_file"`
	RecipientDelim    string              `toml:"recipient_delimiter"`
	SMTP              fileSMTP            `toml:"smtp"`
	POP3              filePOP3            `toml:"pop3"`
	Admin             fileAdmin           `toml:"admin"`
	TLS               fileTLS             `toml:"tls"`
	Queue             fileQueue           `toml:"queue"`
	Route             []fileRoute         `toml:"route"`
	DKIM              fileDKIM            `toml:"dkim"`
	ARC               fileARC             `toml:"arc"`
	Auth              fileAuth            `toml:"auth"`
	Submission        fileSubmission      `toml:"submission"`
	Webhook           []fileWebhook       `toml:"webhook"`
	DNS               fileDNS             `toml:"dns"`
	MTASTS            fileMTASTS          `toml:"mta_sts"`
	DANE              fileDANE            `toml:"dane"`
	TLSRPT            fileTLSRPT          `toml:"tls_rpt"`
	Fleet             fileFleet           `toml:"fleet"`
}

type fileSMTP struct {
	Listen         []string `toml:"listen"`
	ListenTLS      []string `toml:"listen_tls"`
	MaxMessageSize any      `toml:"max_message_size"`
	MaxRecipients  int64    `toml:"max_recipients"`
	MaxLineLength  any      `toml:"max_line_length"`
	MaxErrors      int64    `toml:"max_errors"`
	CommandTimeout string   `toml:"command_timeout"`
	DataTimeout    string   `toml:"data_timeout"`
	MaxConnections int64    `toml:"max_connections"`
	MaxConnsPerIP  int64    `toml:"max_conns_per_ip"`
	MaxConnsTrust  int64    `toml:"max_conns_per_trusted_ip"`
	ReservedPct    int64    `toml:"reserved_percent"`
	StressPct      int64    `toml:"stress_percent"`
	StressTimeout  string   `toml:"stress_timeout"`
	MaxCommands    int64    `toml:"max_commands"`
	MaxSessionRcpt int64    `toml:"max_session_recipients"`
	SessionTimeout string   `toml:"session_timeout"`
	TarpitAfter    int64    `toml:"tarpit_after"`
	TarpitDelay    string   `toml:"tarpit_delay"`
	MTPriorityUntr string   `toml:"mt_priority_untrusted"`
}

type filePOP3 struct {
	Listen    []string `toml:"listen"`
	ListenTLS []string `toml:"listen_tls"`
}

type fileAdmin struct {
	Socket        string `toml:"socket"`
	MetricsListen string `toml:"metrics_listen"`
	History       string `toml:"history"`
}

type fileTLS struct {
	Cert   string `toml:"cert"`
	Key    string `toml:"key"`
	CAFile string `toml:"ca_file"`
}

type fileQueue struct {
	RetryMin          string `toml:"retry_min"`
	RetryMax          string `toml:"retry_max"`
	Lifetime          string `toml:"lifetime"`
	DelayWarning      string `toml:"delay_warning"`
	PerHopConcurrency int64  `toml:"per_hop_concurrency"`
	MinFreeSpace      any    `toml:"min_free_space"`
	MaxMessageRate    string `toml:"max_message_rate"`
	MaxMsgsPerConn    int64  `toml:"max_messages_per_connection"`
	ThrottleRestore   string `toml:"throttle_restore"`
}

type fileRoute struct {
	Domain           string `toml:"domain"`
	To               any    `toml:"to"` // a string, or an array of them (failover)
	TLS              string `toml:"tls"`
	AuthUser         string `toml:"auth_user"`
	AuthPasswordFile string `toml:"auth_password_file"`
	TLSCAFile        string `toml:"tls_ca_file"`
	TLSServerName    string `toml:"tls_server_name"`
	SourceIP         string `toml:"source_ip"`
	EHLOName         string `toml:"ehlo_name"`
	MaxMessageRate   string `toml:"max_message_rate"`
	PerHopConc       int64  `toml:"per_hop_concurrency"`
	MaxMsgsPerConn   int64  `toml:"max_messages_per_connection"`
}

type fileDKIM struct {
	Verify         bool              `toml:"verify"`
	RejectFailures []string          `toml:"reject_failures"`
	Sign           []fileDKIMSign    `toml:"sign"`
	Keys           map[string]string `toml:"keys"`
}

type fileARC struct {
	Verify bool           `toml:"verify"`
	Sign   []fileDKIMSign `toml:"sign"`
}

type fileAuth struct {
	SPF                bool `toml:"spf"`
	SPFRejectFail      bool `toml:"spf_reject_fail"`
	DMARC              bool `toml:"dmarc"`
	DMARCReject        bool `toml:"dmarc_reject"`
	CheckRelayNetworks bool `toml:"check_relay_networks"`
}

type fileDKIMSign struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	Key      string `toml:"key"`
}

// decode decodes data over fc, strictly, and returns the line of every key
// in it. go-toml replaces arrays and sets only the keys present, which is
// what reading a file over the defaults needs.
func decode(name string, data []byte, fc *fileConfig) (index, error) {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(fc); err != nil {
		return nil, decodeError(name, err)
	}
	idx, err := buildIndex(data)
	if err != nil {
		// go-toml accepted the document, so its own parser should too.
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := checkKeyCase(name, idx); err != nil {
		return nil, err
	}
	return idx, nil
}

// checkKeyCase reports keys that differ from a known key only in case.
// TOML keys are case-sensitive, but go-toml matches struct fields without
// regard to case, so "relAY_networks" would silently set relay_networks
// (found by fuzzing).
func checkKeyCase(name string, idx index) error {
	var errs []error
	for k, line := range idx {
		path := strings.Split(k, "\x00")
		if !knownKeyPath(reflect.TypeOf(fileConfig{}), path) {
			key := displayKey(path)
			errs = append(errs, &Error{File: name, Line: line, Key: key, Msg: fmt.Sprintf("unknown key %q", key)})
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].(*Error).Line < errs[j].(*Error).Line })
	return joinErrors(errs)
}

// knownKeyPath walks t by the TOML tags of its fields, exactly.
func knownKeyPath(t reflect.Type, path []string) bool {
	for _, part := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case isIndexPart(part) && t.Kind() == reflect.Slice:
			t = t.Elem()
			continue
		case t.Kind() == reflect.Map:
			return true // free-form tables: [dkim.keys], [sender_domains]
		case isIndexPart(part) && t.Kind() == reflect.Interface:
			continue // an array in a field that takes several types (route.to)
		case t.Kind() != reflect.Struct:
			return false
		}
		found := false
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag == part {
				t, found = t.Field(i).Type, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// decodeError turns go-toml's errors into *Error values.
func decodeError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs []error
		for i := range strict.Errors {
			e := &strict.Errors[i]
			line, _ := e.Position()
			key := displayKey(e.Key())
			errs = append(errs, &Error{File: name, Line: line, Key: key, Msg: fmt.Sprintf("unknown key %q", key)})
		}
		return joinErrors(errs)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		// go-toml's message for a value of the wrong type names Go types,
		// which mean nothing to whoever edits the file: say it in TOML terms.
		if got, ok := typeMismatch(msg); ok && len(de.Key()) > 0 {
			key := displayKey(de.Key())
			if want := describeType(de.Key()); want != "" {
				msg = fmt.Sprintf("%s: wrong type: want %s, got a TOML %s", key, want, got)
			}
			return &Error{File: name, Line: line, Key: key, Msg: msg}
		}
		return &Error{File: name, Line: line, Column: col, Msg: msg}
	}
	return fmt.Errorf("%s: %w", name, err)
}

// typeMismatch extracts the TOML kind from go-toml's "cannot decode TOML
// <kind> into ..." message.
func typeMismatch(msg string) (kind string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	if !ok {
		return "", false
	}
	kind, _, ok = strings.Cut(rest, " into ")
	return kind, ok
}

// describeType names, for a person, the type the file's key must have.
// It returns "" for a key that fileConfig does not have.
func describeType(key []string) string {
	t := reflect.TypeOf(fileConfig{})
	for _, part := range key {
		for t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			found := false
			for i := 0; i < t.NumField(); i++ {
				if t.Field(i).Tag.Get("toml") == part {
					t, found = t.Field(i).Type, true
					break
				}
			}
			if !found {
				return ""
			}
		case reflect.Map:
			t = t.Elem()
		default:
			return ""
		}
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.Interface:
		return `a size (bytes, or a string like "25MiB")`
	case reflect.Map:
		return "a table of strings"
	case reflect.Struct:
		return "a table"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "an array of tables"
		}
		return "an array of strings"
	}
	return ""
}

// joinErrors returns the only error itself, so that the common case stays
// a plain *Error, or all of them joined.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// index maps a key path (pathKey) to the 1-based line where the file sets
// it. Array elements and [[array]] entries appear with an "[i]" part, so
// "route", "[1]", "to" is the to key of the second [[route]].
type index map[string]int

func pathKey(path []string) string { return strings.Join(path, "\x00") }

func indexPart(i int) string { return "[" + strconv.Itoa(i) + "]" }

func isIndexPart(s string) bool {
	return len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' && strings.Trim(s[1:len(s)-1], "0123456789") == ""
}

// displayKey writes a key path the way a TOML file would spell it, with
// array indexes: smtp.listen, route[1].to, dkim.keys."s1._domainkey.a.test".
func displayKey(path []string) string {
	var b strings.Builder
	for i, part := range path {
		if isIndexPart(part) {
			b.WriteString(part)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		if isBareKey(part) {
			b.WriteString(part)
		} else {
			b.WriteString(strconv.Quote(part))
		}
	}
	return b.String()
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// buildIndex walks the document with go-toml's parser and records the line
// of every table header, key and array element, which the decoder does not
// keep but the validator needs to point at a bad value.
func buildIndex(data []byte) (index, error) {
	idx := index{}
	arrays := map[string]int{} // [[array]] path → entries seen so far
	var p unstable.Parser
	p.Reset(data)
	var prefix []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyParts(&p, e)
			prefix = resolveTable(arrays, parts, e.Kind == unstable.ArrayTable)
			idx[pathKey(prefix)] = line
			if e.Kind == unstable.ArrayTable {
				// The array itself is where its first entry is.
				if k := pathKey(prefix[:len(prefix)-1]); idx[k] == 0 {
					idx[k] = line
				}
			}
		case unstable.KeyValue:
			indexKeyValue(&p, idx, prefix, e)
		}
	}
	if err := p.Error(); err != nil {
		var perr *unstable.ParserError
		if errors.As(err, &perr) && len(perr.Highlight) > 0 {
			pos := p.Shape(p.Range(perr.Highlight)).Start
			return nil, fmt.Errorf("%d:%d: %s", pos.Line, pos.Column, perr.Message)
		}
		return nil, err
	}
	return idx, nil
}

// resolveTable turns a table header's key into a path, adding the current
// entry's index after every part that names an array of tables, so that
// [dkim.sign] keys land under the last [[dkim.sign]] entry.
func resolveTable(arrays map[string]int, parts []string, arrayTable bool) []string {
	var out []string
	for i, part := range parts {
		out = append(out, part)
		k := pathKey(out)
		if arrayTable && i == len(parts)-1 {
			arrays[k]++
			out = append(out, indexPart(arrays[k]-1))
		} else if n, ok := arrays[k]; ok {
			out = append(out, indexPart(n-1))
		}
	}
	return out
}

func indexKeyValue(p *unstable.Parser, idx index, prefix []string, kv *unstable.Node) {
	parts, line := keyParts(p, kv)
	path := append(append([]string(nil), prefix...), parts...)
	idx[pathKey(path)] = line
	indexValue(p, idx, path, kv.Value(), line)
}

// indexValue records the elements of arrays and the keys of inline tables,
// so that `relay_networks = [...]` spread over lines points at the bad one.
func indexValue(p *unstable.Parser, idx index, path []string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				indexKeyValue(p, idx, path, n)
			}
		}
	case unstable.Array:
		it := v.Children()
		i := 0
		for it.Next() {
			n := it.Node()
			if n.Kind == unstable.Comment {
				continue
			}
			elemLine := line
			if n.Kind != unstable.Array { // arrays carry no range of their own
				elemLine = p.Shape(n.Raw).Start.Line
			}
			elem := append(append([]string(nil), path...), indexPart(i))
			idx[pathKey(elem)] = elemLine
			indexValue(p, idx, elem, n, elemLine)
			i++
		}
	}
}

// keyParts returns the parts of a key-value's or table header's key and the
// line where the key starts.
func keyParts(p *unstable.Parser, n *unstable.Node) ([]string, int) {
	var parts []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return parts, line
}

// source is a decoded document: its name for errors and its key lines.
type source struct {
	name string
	idx  index
}

// validator converts fileConfig to Config and collects every mistake, each
// attributed to the document and line that set the value at fault.
type validator struct {
	defaults source
	file     source // zero when there is no file
	errs     []*Error
}

// inFile reports whether the file (not the defaults) sets path.
func (v *validator) inFile(path ...string) bool {
	_, ok := v.file.idx[pathKey(path)]
	return ok
}

// where finds the document and line that set path: the key itself in the
// file, else in the defaults, else the nearest enclosing table that has a
// line (for a missing key, its [[route]] header).
func (v *validator) where(path []string) (string, int) {
	k := pathKey(path)
	if l, ok := v.file.idx[k]; ok {
		return v.file.name, l
	}
	if l, ok := v.defaults.idx[k]; ok {
		return v.defaults.name, l
	}
	for n := len(path) - 1; n > 0; n-- {
		k := pathKey(path[:n])
		if l, ok := v.file.idx[k]; ok {
			return v.file.name, l
		}
		if l, ok := v.defaults.idx[k]; ok {
			return v.defaults.name, l
		}
	}
	if v.file.name != "" {
		return v.file.name, 0
	}
	return v.defaults.name, 0
}

// errorf records a mistake in the value at path.
func (v *validator) errorf(path []string, format string, args ...any) {
	file, line := v.where(path)
	key := displayKey(path)
	v.errs = append(v.errs, &Error{File: file, Line: line, Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)})
}

// err returns the collected mistakes in file order.
func (v *validator) err() error {
	sort.SliceStable(v.errs, func(i, j int) bool {
		a, b := v.errs[i], v.errs[j]
		if a.File != b.File {
			return a.File != defaultsName // the user's file first
		}
		return a.Line < b.Line
	})
	errs := make([]error, len(v.errs))
	for i, e := range v.errs {
		errs[i] = e
	}
	return joinErrors(errs)
}

// resolveDataDir makes data_dir absolute: relative to the config file's
// directory when the file sets it, so that a config works from any working
// directory, else relative to the working directory.
func resolveDataDir(dir, configPath string, fromFile bool) (string, error) {
	if !filepath.IsAbs(dir) && fromFile {
		dir = filepath.Join(filepath.Dir(configPath), dir)
	}
	return filepath.Abs(dir)
}
