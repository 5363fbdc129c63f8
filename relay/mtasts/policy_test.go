package mtasts

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	p, err := Parse([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\nextension: ignored\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != Enforce || p.MaxAge != 7*24*time.Hour || len(p.MX) != 2 {
		t.Fatalf("%+v", p)
	}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "x.example.com": false,
		"a.example.net": true, "example.net": false, "a.b.example.net": false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
	if got := len(p.Lines()); got != 6 {
		t.Errorf("Lines: %d, want 6", got)
	}
	if p, err := Parse([]byte("version: STSv1\nmode: none\nmax_age: 9999999999\n")); err != nil || p.MaxAge != MaxMaxAge {
		t.Errorf("mode none without mx: %v, %v (max_age capped)", p, err)
	}
	for name, body := range map[string]string{
		"no version":  "mode: enforce\nmx: a\nmax_age: 1\n",
		"bad version": "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
		"bad mode":    "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
		"no max_age":  "version: STSv1\nmode: enforce\nmx: a\n",
		"neg max_age": "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
		"no mx":       "version: STSv1\nmode: enforce\nmax_age: 1\n",
		"not a line":  "version: STSv1\nmode enforce\n",
	} {
		if _, err := Parse([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseTXT(t *testing.T) {
	if id, err := ParseTXT([]string{"something else", "v=STSv1; id=20160831085700Z;"}); err != nil || id != "20160831085700Z" {
		t.Errorf("got %q, %v", id, err)
	}
	for name, recs := range map[string][]string{
		"none":    {"v=spf1 -all"},
		"two":     {"v=STSv1; id=a", "v=STSv1; id=b"},
		"no id":   {"v=STSv1;"},
		"bad id":  {"v=STSv1; id=a-b"},
		"long id": {"v=STSv1; id=012345678901234567890123456789012"},
		"v later": {"id=a; v=STSv1"},
	} {
		if _, err := ParseTXT(recs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
