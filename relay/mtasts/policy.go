// Package mtasts implements SMTP MTA Strict Transport Security (RFC 8461)
// for the sending side: discovery of a recipient domain's policy through
// the TXT record at _mta-sts.<domain>, its fetch over verified HTTPS, the
// policy cache (kept by the caller, in the spool) and the match of MX
// hosts against the policy.
package mtasts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 §5).
type Mode string

// The modes.
const (
	// Enforce: deliver only to an MX host the policy lists, over TLS with
	// a certificate valid for that host; otherwise do not deliver.
	Enforce Mode = "enforce"
	// Testing: deliver as without a policy, and report failures (TLS-RPT).
	Testing Mode = "testing"
	// None: the domain has withdrawn its policy.
	None Mode = "none"
)

// MaxMaxAge is the longest max_age honoured (RFC 8461 §3.2: 31557600).
const MaxMaxAge = 31557600 * time.Second

// Policy is a domain's MTA-STS policy.
type Policy struct {
	Mode   Mode          `json:"mode"`
	MX     []string      `json:"mx"` // "mail.example.com" or "*.example.net", lower case
	MaxAge time.Duration `json:"max_age"`
	// ID is the id of the TXT record that announced the policy when it
	// was fetched: a different id means a new policy to fetch.
	ID string `json:"id"`
	// Fetched is when the policy was fetched; it expires MaxAge later.
	Fetched time.Time `json:"fetched"`
	// Text is the policy as served, for TLS-RPT's policy-string.
	Text string `json:"text"`
}

// Expires is when the cached policy stops being usable.
func (p *Policy) Expires() time.Time { return p.Fetched.Add(p.MaxAge) }

// Lines are the policy's lines, for TLS-RPT's policy-string (RFC 8460
// §4.4: each line of the policy, CRLF removed).
func (p *Policy) Lines() []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(p.Text, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Matches reports whether host (an MX host name) is one of the policy's
// mx patterns (RFC 8461 §4.1): exactly, or "*.example.net" for one more
// label on the left.
func (p *Policy) Matches(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			i := strings.IndexByte(host, '.')
			if i > 0 && host[i+1:] == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// Parse reads a policy body (RFC 8461 §3.2): "key: value" lines, version
// STSv1, a mode, a max_age, and mx patterns (at least one unless the mode
// is none). Unknown keys are ignored, as the RFC asks.
func Parse(body []byte) (*Policy, error) {
	p := &Policy{Text: string(body)}
	var version, maxAge string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("policy line %q is not key: value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			p.Mode = Mode(v)
		case "max_age":
			maxAge = v
		case "mx":
			p.MX = append(p.MX, strings.TrimSuffix(strings.ToLower(v), "."))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("policy version %q is not STSv1", version)
	}
	switch p.Mode {
	case Enforce, Testing, None:
	default:
		return nil, fmt.Errorf("policy mode %q is not enforce, testing or none", p.Mode)
	}
	n, err := strconv.ParseUint(maxAge, 10, 64)
	if err != nil || len(maxAge) > 10 {
		return nil, fmt.Errorf("policy max_age %q is not a number of seconds", maxAge)
	}
	p.MaxAge = time.Duration(min(n, uint64(MaxMaxAge/time.Second))) * time.Second
	if len(p.MX) == 0 && p.Mode != None {
		return nil, errors.New("policy lists no mx")
	}
	return p, nil
}

// ParseTXT finds the policy id in the TXT records of _mta-sts.<domain>
// (RFC 8461 §3.1): exactly one record must start with "v=STSv1".
func ParseTXT(records []string) (string, error) {
	id := ""
	n := 0
	for _, r := range records {
		fields := strings.Split(r, ";")
		if strings.TrimSpace(fields[0]) != "v=STSv1" {
			continue
		}
		n++
		for _, f := range fields[1:] {
			if v, ok := strings.CutPrefix(strings.TrimSpace(f), "id="); ok {
				id = v
			}
		}
	}
	switch {
	case n == 0:
		return "", errors.New("no v=STSv1 record")
	case n > 1:
		return "", fmt.Errorf("%d v=STSv1 records (one is allowed)", n)
	case id == "" || len(id) > 32 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) >= 0:
		return "", fmt.Errorf("invalid id %q (1 to 32 letters and digits)", id)
	}
	return id, nil
}
