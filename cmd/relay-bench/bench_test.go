package main

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	for _, c := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(3, 1, 2), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond}, // few samples: the maximum
	} {
		if got := percentile(c.in, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestSinkCounterParsing(t *testing.T) {
	out := "sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=1\rsess=1 quit=1 mesg=2\rsess=2 quit=2 mesg=12"
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Split(splitRecords)
	last := -1
	records := 0
	for sc.Scan() {
		records++
		if n, ok := parseMesg(sc.Text()); ok {
			last = n
		}
	}
	if records != 4 || last != 12 {
		t.Errorf("got %d records, last mesg=%d; want 4 and 12", records, last)
	}
	for _, bad := range []string{"", "sess=3 quit=3", "mesg=x"} {
		if n, ok := parseMesg(bad); ok {
			t.Errorf("parseMesg(%q) = %d, true; want false", bad, n)
		}
	}
}

func TestDefaultN(t *testing.T) {
	for _, c := range []struct{ size, sessions, want int }{
		{1024, 1, 500},
		{1024, 5, 2500},
		{1024, 20, 5000},
		{1024, 100, 5000},
		{65536, 1, 125},
		{65536, 20, 1250},
		{65536, 100, 1250},
	} {
		if got := defaultN(c.size, c.sessions); got != c.want {
			t.Errorf("defaultN(%d, %d) = %d, want %d", c.size, c.sessions, got, c.want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"relay-bench", "-sizes", "1k,65536", "-sessions", "20", "-rcpts", "1,10", "-targets", "relay,direct"})
	if err != nil {
		t.Fatal(err)
	}
	m := o.matrix()
	if len(m) != 4 || m[0] != (config{1024, 20, 1, 5000}) || m[3] != (config{65536, 20, 10, 1250}) {
		t.Errorf("matrix = %v", m)
	}
	o, err = parseOptions([]string{"relay-bench", "-n", "300", "-sessions", "1"})
	if err != nil || o.matrix()[0].n != 300 || len(o.targets) != 3 {
		t.Errorf("-n 300: %v %v", o.matrix(), err)
	}
	for _, bad := range [][]string{
		{"-sink-addr", "10.0.0.1:2626"},
		{"-relay-addr", "localhost:2525"},
		{"-relay-addr", "[::1]:2525"},
		{"-relay-addr", "127.0.0.9:2626"}, // same as the sink
		{"-sizes", "0"},
		{"-targets", "exim"},
	} {
		if _, err := parseOptions(append([]string{"relay-bench"}, bad...)); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

func TestProbeBody(t *testing.T) {
	for _, size := range []int{2, 79, 80, 81, 82, 1024, 65536} {
		b := probeBody(size)
		if len(b) != size || !bytes.HasSuffix(b, []byte("\r\n")) {
			t.Errorf("probeBody(%d): %d bytes, ends %q", size, len(b), b[max(len(b)-2, 0):])
		}
		for _, line := range bytes.SplitAfter(b, []byte("\r\n")) {
			if len(line) > 80 || bytes.HasPrefix(line, []byte(".")) || bytes.Count(line, []byte("\r")) > 1 {
				t.Errorf("probeBody(%d): bad line %q", size, line)
			}
		}
	}
}

func TestProcParsing(t *testing.T) {
	status := []byte("Name:\trelay\nVmPeak:\t  900 kB\nVmHWM:\t   34304 kB\nVmRSS:\t 30000 kB\n")
	if got, err := statusKiB(status, "VmHWM"); err != nil || got != 34304 {
		t.Errorf("statusKiB VmHWM = %d, %v", got, err)
	}
	if _, err := statusKiB(status, "VmSwap"); err == nil {
		t.Error("statusKiB: missing field accepted")
	}
	if got, err := statPPID([]byte("4242 (smtpd (x) y) S 4200 4242 4242 0 -1 4194560")); err != nil || got != 4200 {
		t.Errorf("statPPID = %d, %v", got, err)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"relay-bench", "-sizes", "1024,65536", "-o", "my report.md", "it's"})
	want := `relay-bench -sizes 1024,65536 -o 'my report.md' 'it'\''s'`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestTable(t *testing.T) {
	c1 := config{size: 1024, sessions: 20, rcpts: 1, n: 5000}
	c2 := config{size: 65536, sessions: 20, rcpts: 1, n: 1250}
	lat := []time.Duration{time.Millisecond, 2 * time.Millisecond, 40 * time.Millisecond}
	r := report{
		opts:    options{targets: []string{"relay", "postfix", "direct"}},
		configs: []config{c1, c2},
		skipped: map[string]string{},
		results: []result{
			{target: "relay", cfg: c1, accept: time.Second, e2e: 2 * time.Second, probe: probeResult{latencies: lat}, rssKiB: 80 << 10},
			{target: "postfix", cfg: c1, accept: 5 * time.Second, e2e: 8 * time.Second, rssKiB: 300 << 10},
			{target: "direct", cfg: c1, accept: 500 * time.Millisecond, e2e: 500 * time.Millisecond},
			{target: "relay", cfg: c2, accept: time.Second, err: errors.New("end to end: timed out")},
		},
	}
	lines := strings.Split(strings.TrimSpace(r.table()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines, want 4:\n%s", len(lines), r.table())
	}
	cells := func(line string) []string {
		f := strings.Split(strings.Trim(line, "| "), "|")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		return f
	}
	head, row1, row2 := cells(lines[0]), cells(lines[2]), cells(lines[3])
	if len(head) != 4+3*4+3 || head[len(head)-1] != "relay/postfix" {
		t.Errorf("header: %q", head)
	}
	want1 := []string{"1 KiB", "20", "1", "5000", "5000", "2500", "2.00 / 40.0 (3)", "80.0", "1000", "625", "-", "300.0",
		"10000", "10000", "-", "-", "0.25", "0.06", "4.00"}
	if strings.Join(row1, "|") != strings.Join(want1, "|") {
		t.Errorf("row 1:\n got %q\nwant %q", row1, want1)
	}
	if row2[4] != "1250" || row2[5] != "error" || row2[8] != "-" || row2[len(row2)-1] != "-" {
		t.Errorf("row 2 (relay failed, others not run): %q", row2)
	}

	r.skipped["postfix"] = "not running as root"
	if !strings.Contains(r.table(), "| skipped ") || !strings.Contains(r.render(), "**postfix skipped**: not running as root") {
		t.Errorf("skipped target not shown:\n%s", r.render())
	}
}
