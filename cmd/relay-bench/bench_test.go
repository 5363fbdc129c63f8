package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"

	"bufio"
	"bytes"
	"errors"
	"github.com/miekg/dns"
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
	if err != nil || o.matrix()[0].n != 300 || len(o.targets) != len(targetNames) {
		t.Errorf("-n 300: %v %v", o.matrix(), err)
	}
	if a, s, d := o.addr("exim"), o.addr("sink"), o.addr("dns"); a != "127.0.50.4:2525" || s != "127.0.50.9:2626" || d != "127.0.50.53:53" {
		t.Errorf("default addresses: exim %s, sink %s, dns %s", a, s, d)
	}
	o, err = parseOptions([]string{"relay-bench", "-net", "127.0.7"})
	if err != nil || o.addr("haraka") != "127.0.7.7:2525" {
		t.Errorf("-net 127.0.7: haraka at %s, %v", o.addr("haraka"), err)
	}
	for _, bad := range [][]string{
		{"-net", "10.0.0"},
		{"-net", "127.0.50.1"},
		{"-net", "localhost"},
		{"-sizes", "0"},
		{"-targets", "sendmail"},
	} {
		if _, err := parseOptions(append([]string{"relay-bench"}, bad...)); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

func TestRunSize(t *testing.T) {
	for _, c := range []struct {
		n, w    int
		took    time.Duration
		runTime time.Duration
		want    int
	}{
		{5000, 100, 100 * time.Millisecond, 30 * time.Second, 5000}, // fast: all of N
		{5000, 100, 10 * time.Second, 30 * time.Second, 300},        // 10 msg/s for 30 s
		{5000, 100, 100 * time.Second, 30 * time.Second, minRun},    // 1 msg/s: the minimum
		{100, 100, 100 * time.Second, 30 * time.Second, 100},        // never more than N
		{5000, 100, 10 * time.Second, 0, 5000},                      // -run-time 0: N
	} {
		if got := runSize(c.n, c.w, c.took, c.runTime); got != c.want {
			t.Errorf("runSize(%d, %d, %v, %v) = %d, want %d", c.n, c.w, c.took, c.runTime, got, c.want)
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
	status := []byte("Name:\trelay\nVmPeak:\t  900 kB\nVmHWM:\t   34304 kB\nVmRSS:\t 30000 kB\nRssAnon:\t 12000 kB\n")
	if got, ok, err := statusKiB(status, "RssAnon"); err != nil || !ok || got != 12000 {
		t.Errorf("statusKiB RssAnon = %d, %v, %v", got, ok, err)
	}
	if _, ok, err := statusKiB(status, "VmSwap"); ok || err != nil {
		t.Errorf("statusKiB: missing field: %v, %v", ok, err)
	}
	stat := []byte("4242 (smtpd (x) y) S 4200 4242 4242 0 -1 4194560 10 0 0 0 7 3 20 10 20 0 1")
	if got, err := statPPID(stat); err != nil || got != 4200 {
		t.Errorf("statPPID = %d, %v", got, err)
	}
	if got, err := statCPUTicks(stat); err != nil || got != 40 {
		t.Errorf("statCPUTicks = %d, %v; want 7+3+20+10", got, err)
	}
	if got, err := cgroupCPU([]byte("usage_usec 3500\nuser_usec 2500\nsystem_usec 1000\nnice_usec 0\n")); err != nil || got != 3500*time.Microsecond {
		t.Errorf("cgroupCPU = %v, %v", got, err)
	}
	if _, err := cgroupCPU([]byte("usage_usec 3500\n")); err == nil {
		t.Error("cgroupCPU: cpu.stat without user_usec accepted")
	}
}

// TestGroup runs a shell whose child burns CPU and exits: the group must
// count the child's CPU time after it exited, see its memory while it
// ran, and kill what is left when closed. As root with cgroup2 the group
// is a cgroup; otherwise (and always) a process tree.
func TestGroup(t *testing.T) {
	modes := map[string]string{"tree": ""}
	if os.Geteuid() == 0 {
		if base := cgroupBase(); base != "" {
			modes["cgroup"] = base
		}
	}
	for mode, base := range modes {
		t.Run(mode, func(t *testing.T) {
			g, err := newGroup(base, "test-"+mode)
			if err != nil {
				t.Fatal(err)
			}
			// The child burns CPU (about 0.1 s of it) and exits, reaped by
			// sh; then sh sleeps: the group is still alive, the child gone.
			cmd := exec.Command("sh", "-c", `sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'; exec sleep 60`)
			if err := g.start(cmd); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			defer func() { <-waited }()
			go func() { waited <- cmd.Wait() }()
			mem := sampleMemory(g, 10*time.Millisecond)
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				pids, err := g.pids()
				if err != nil {
					t.Fatal(err)
				}
				if len(pids) == 1 && pids[0] == cmd.Process.Pid && strings.Contains(procComm(pids[0]), "sleep") {
					break // the child is gone, the shell became sleep
				}
				if time.Now().After(deadline) {
					t.Fatalf("the child still runs after 30 s: %v", pids)
				}
			}
			peak, err := mem.stop()
			if err != nil || peak.rss <= 0 || peak.anon <= 0 || peak.anon > peak.rss {
				t.Errorf("memory peak %+v, %v", peak, err)
			}
			cpu, err := g.cpu()
			if err != nil || cpu < 50*time.Millisecond {
				t.Errorf("cpu = %v, %v; want the exited child's (about 0.1 s)", cpu, err)
			}
			if err := g.close(0); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-waited:
				waited <- err
			case <-time.After(5 * time.Second):
				t.Error("the shell still runs 5 s after close")
				cmd.Process.Kill()
			}
		})
	}
}

func TestNSUsers(t *testing.T) {
	passwd, group, ids, err := nsUsers("bench-a", "bench-b")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.ReadFile("/etc/passwd")
	if !strings.HasPrefix(passwd, string(host)) || ids["bench-a"] == ids["bench-b"] {
		t.Fatalf("ids %v; passwd does not extend the host's", ids)
	}
	for name, id := range ids {
		if strings.Contains(string(host), fmt.Sprintf(":x:%d:", id)) {
			t.Errorf("%s got id %d, which the host uses", name, id)
		}
		if !strings.Contains(passwd, fmt.Sprintf("%s:x:%d:%d:", name, id, id)) || !strings.Contains(group, fmt.Sprintf("%s:x:%d:", name, id)) {
			t.Errorf("%s (%d) missing from passwd or group", name, id)
		}
	}
}

// TestDNS asks the run's DNS server what chasquid asks it.
func TestDNS(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.50.53:0")
	if err != nil {
		t.Skip("no 127.0.50.53 here:", err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	s, err := startDNS(addr, []string{"relayed.test. 60 IN MX 10 mx.relayed.test.", "mx.relayed.test. 60 IN A 127.0.50.9"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ask := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	if r := ask("Relayed.Test.", dns.TypeMX); len(r.Answer) != 1 || r.Answer[0].(*dns.MX).Mx != "mx.relayed.test." {
		t.Errorf("MX: %v", r)
	}
	if r := ask("mx.relayed.test.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA of the MX host: want no data, got %v", r)
	}
	if r := ask("src.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("TXT src.test: want NXDOMAIN, got %v", r)
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
		opts:    options{targets: []string{"relay", "postfix", "exim", "direct"}, net: "127.0.50"},
		configs: []config{c1, c2},
		skipped: map[string]string{"exim": "not running as root"},
		results: []result{
			{target: "relay", cfg: c1, n: 5000, accept: time.Second, e2e: 2 * time.Second, probe: probeResult{latencies: lat}, mem: memory{80 << 10, 60 << 10}, cpu: 1500 * time.Microsecond},
			{target: "postfix", cfg: c1, n: 5000, accept: 5 * time.Second, e2e: 8 * time.Second, mem: memory{300 << 10, 40 << 10}},
			{target: "direct", cfg: c1, n: 5000, accept: 500 * time.Millisecond, e2e: 500 * time.Millisecond},
			{target: "relay", cfg: c2, n: 1250, accept: time.Second, err: errors.New("end to end: timed out")},
		},
	}
	lines := strings.Split(strings.TrimSpace(r.table()), "\n")
	if len(lines) != 6 {
		t.Fatalf("table has %d lines, want 6 (header, rule, 4 runs):\n%s", len(lines), r.table())
	}
	cells := func(line string) string {
		f := strings.Split(strings.Trim(line, "| "), "|")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		return strings.Join(f, ",")
	}
	for i, want := range []string{
		"size,sessions,rcpts,N,target,accept/s,e2e/s,÷ direct,relay ÷,p50 / p99 ms (n),RSS MiB,anon MiB,CPU ms/msg",
		"",
		"1 KiB,20,1,5000,relay,5000,2500,0.25,-,2.00 / 40.0 (3),80.0,60.0,1.500",
		"1 KiB,20,1,5000,postfix,1000,625,0.06,4.00,-,300.0,40.0,-",
		"1 KiB,20,1,5000,direct,10000,10000,-,0.25,-,-,-,-",
		"64 KiB,20,1,1250,relay,1250,error,-,-,-,-,-,-",
	} {
		if got := cells(lines[i]); want != "" && got != want {
			t.Errorf("line %d:\n got %s\nwant %s", i, got, want)
		}
	}
	if text := r.render(); !strings.Contains(text, "**exim skipped**: not running as root") || !strings.Contains(text, "exim 127.0.50.4:2525") {
		t.Errorf("skipped target not shown:\n%s", text)
	}
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return string(b)
}
