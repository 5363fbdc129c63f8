package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's commands, run as the README shows them, so that it cannot
// drift from what works. A few rewrites are unavoidable and are all made
// by readmeRewrite: the tests run on 127.0.24.x (the README uses
// 127.0.0.x, which other tests share), and use the binary built once for
// the package instead of `go run` or `go build` in each tour.

// readme returns the repository's README.md.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readmeSection returns the text under the heading line, up to the next
// heading of the same or a higher level.
func readmeSection(t *testing.T, md, heading string) string {
	t.Helper()
	i := strings.Index(md, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README.md has no heading %q", heading)
	}
	rest := md[i+len(heading)+2:]
	level := strings.Index(heading, " ")
	for _, l := range regexp.MustCompile(`(?m)^#{1,6} `).FindAllStringIndex(rest, -1) {
		if l[1]-l[0]-1 <= level && !insideFence(rest[:l[0]]) {
			return rest[:l[0]]
		}
	}
	return rest
}

// insideFence reports whether text ends inside a fenced code block.
func insideFence(text string) bool {
	return strings.Count("\n"+text, "\n```")%2 == 1
}

// readmeBlocks returns the fenced code blocks of text whose info string
// is lang ("sh"; "" for blocks of output).
func readmeBlocks(text, lang string) []string {
	var out []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		info, ok := strings.CutPrefix(lines[i], "```")
		if !ok {
			continue
		}
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if info == lang {
			out = append(out, strings.Join(body, "\n")+"\n")
		}
	}
	return out
}

// readmeAddr maps the README's loopback addresses onto this package's
// range for these tests, 127.0.24.0/24.
var readmeAddr = regexp.MustCompile(`127\.0\.0\.(\d+)`)

// readmeRewrite makes a README command line runnable here: addresses in
// 127.0.24.x, the test's relay binary for `go run ./cmd/relay` and for
// `go build -o relay ../cmd/relay`, and the README's one-second waits
// (for relays to listen, for mail to move on) three seconds long: with
// every package's tests running at once on two cores, a relay took
// longer than a second to listen (seen once in a full run).
var readmeSleep = regexp.MustCompile(`(?m)^sleep 1\b`)

func readmeRewrite(s string) string {
	s = readmeAddr.ReplaceAllString(s, "127.0.24.$1")
	s = readmeSleep.ReplaceAllString(s, "sleep 3")
	s = strings.ReplaceAll(s, "go run ./cmd/relay", `"$RELAY"`)
	s = strings.ReplaceAll(s, "go build -o relay ../cmd/relay", `cp "$RELAY" relay`)
	return s
}

// tourShell runs README commands with bash in a directory, each script in
// a process group of its own that the test's end kills: the relays the
// README starts in the background die with the test.
type tourShell struct {
	t   *testing.T
	dir string
	env []string
}

func newTourShell(t *testing.T, dir string) *tourShell {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed: the README's commands need it")
	}
	return &tourShell{t: t, dir: dir, env: append(os.Environ(), "RELAY="+relayBinary(t), "LC_ALL=C.UTF-8")}
}

// run runs script (already rewritten) and returns what it printed, stdout
// and stderr together. The script stops at the first failing command.
func (sh *tourShell) run(name, script string) string {
	t := sh.t
	t.Helper()
	outPath := filepath.Join(sh.dir, "."+name+".out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("bash", "-e", "-c", script)
	cmd.Dir, cmd.Env = sh.dir, sh.env
	// A file, not a pipe: background relays keep it open after bash ends.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		for i := 0; i < 100 && syscall.Kill(-pgid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		syscall.Kill(-pgid, syscall.SIGKILL)
		err = fmt.Errorf("still running after 2 minutes")
	}
	b, _ := os.ReadFile(outPath)
	if err != nil {
		t.Fatalf("README %s: %v; the script:\n%s\nprinted:\n%s", name, err, script, b)
	}
	return string(b)
}

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 15*time.Second, "a listener on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestREADMEFirstRun runs the README's first paragraph: postmaster gets a
// password, the relay runs on the embedded defaults, and a message sent to
// postmaster@localhost is read back over POP3 without TLS, from loopback.
// Only the listen addresses differ from the defaults (127.0.24.1, not
// 127.0.0.1), through a config file that sets nothing else.
func TestREADMEFirstRun(t *testing.T) {
	md := readme(t)
	intro := md[:strings.Index(md, "\n## ")]
	sh := readmeBlocks(intro, "sh")
	if len(sh) < 2 {
		t.Fatalf("README's first section has %d sh blocks; want the start and the send/read", len(sh))
	}
	dir := t.TempDir()
	writeFile(t, dir, "first.toml", []byte("[smtp]\nlisten = [\"127.0.24.1:2525\"]\n[pop3]\nlisten = [\"127.0.24.1:1100\"]\n"))
	const serve = "go run ./cmd/relay serve\n"
	if !strings.HasSuffix(sh[0], serve) {
		t.Fatalf("README's first block does not end with %q:\n%s", serve, sh[0])
	}
	start := readmeRewrite(strings.TrimSuffix(sh[0], serve)) +
		`"$RELAY" serve --config first.toml 2> serve.log &` + "\n"
	shell := newTourShell(t, dir)
	shell.run("first-run-start", start)
	waitListening(t, "127.0.24.1:2525")
	waitListening(t, "127.0.24.1:1100")

	out := shell.run("first-run-read", readmeRewrite(sh[1]))
	shown := readmeBlocks(intro, "")
	if len(shown) == 0 {
		t.Fatal("README's first section shows no output")
	}
	// The README's message, but for its Date line.
	want := regexp.MustCompile(`(?m)^Date: .*\n`).ReplaceAllString(shown[0], "")
	got := regexp.MustCompile(`(?m)^Date: .*\n`).ReplaceAllString(out, "")
	if !strings.HasSuffix(got, want) {
		t.Errorf("the README shows\n%s\nthe commands printed\n%s", shown[0], out)
	}
	if !regexp.MustCompile(`^[0-9A-Z]{13}\n`).MatchString(out) {
		t.Errorf("relay send did not print a queue ID first:\n%s", out)
	}
}

// copyTestdata copies the repository's testdata/ into dir/testdata with
// the README's addresses moved to this package's range, so that the
// tours' `cp ../testdata/...` find them there.
func copyTestdata(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir("../testdata", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), []byte(readmeRewrite(string(b))), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// normalize replaces what changes from run to run (queue IDs, dates,
// sizes, signature prefixes, the addresses of this package) so that the
// README's output and a run's can be compared.
func normalize(s string) string {
	for _, r := range []struct{ re, with string }{
		{`127\.0\.24\.`, "127.0.0."},
		{`\b[0-9A-Z]{13}\b`, "ID"},
		{`\d{4}-\d\d-\d\d \d\d:\d\d`, "DATE"},
		{`(?m)^Date: .*$`, "Date: DATE"},
		{`\d+(\.\d)? (B|KiB|MiB)\b`, "SIZE"},
		{`header\.b=("?)[A-Za-z0-9+/]{8}("?)`, "header.b=B"},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return s
}

// TestREADMEToursMatchTestdata: the configuration the README shows is the
// file in testdata/ it copies.
func TestREADMEToursMatchTestdata(t *testing.T) {
	shown := readmeBlocks(readmeSection(t, readme(t), "### Three relays"), "toml")
	if len(shown) != 1 {
		t.Fatalf("the three-relay tour shows %d TOML blocks, want a.toml", len(shown))
	}
	file, err := os.ReadFile("../testdata/tour/a.toml")
	if err != nil {
		t.Fatal(err)
	}
	if shown[0] != string(file) {
		t.Errorf("README shows\n%s\ntestdata/tour/a.toml is\n%s", shown[0], file)
	}
}

// TestREADMEThreeRelaysAndDKIM runs the three-relay tour and then, in its
// directory, the DKIM tour, as the README shows them: the message goes
// a → b → c, then a signs, b and c verify, alice reads the signed copy
// into message.eml, and `relay dkim verify` says what the README says
// on it and on it changed. Between the two the test stops the relays,
// which the README asks in words (kill %1 %2 %3).
func TestREADMEThreeRelaysAndDKIM(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks is not installed: the README's tours send with it")
	}
	md := readme(t)
	tour := readmeBlocks(readmeSection(t, md, "### Three relays"), "sh")
	dkimSec := readmeSection(t, md, "## DKIM")
	dkimSh := readmeBlocks(dkimSec, "sh")
	if len(tour) != 1 || len(dkimSh) != 1 {
		t.Fatalf("want one sh block in each of the tours; got %d and %d", len(tour), len(dkimSh))
	}
	dir := t.TempDir()
	copyTestdata(t, dir)
	sh := newTourShell(t, dir)
	const between = "mkdir tour1-logs && cp a.log b.log c.log tour1-logs/\nkill %1 %2 %3 && wait\n"
	out := sh.run("three-relays-and-dkim", readmeRewrite(tour[0])+between+readmeRewrite(dkimSh[0]))
	t.Logf("the tours printed:\n%s", out)

	logs := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, "tour", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, c := range []struct{ log, want string }{
		{"tour1-logs/a.log", `msg=delivery id=\S+ to=<alice@c.test> status=delivered reply="250 2.0.0 OK: queued as \S+" relay=127.0.24.3:2525`},
		{"tour1-logs/b.log", `msg=delivery id=\S+ to=<alice@c.test> status=delivered reply="250 2.0.0 OK: queued as \S+" relay=127.0.24.4:2525`},
		{"tour1-logs/c.log", `msg=delivery id=\S+ to=<alice@c.test> status=delivered reply="250 2.0.0 delivered to mailbox alice" relay=local`},
		{"a.log", `msg="dkim: signed" client=\S+ id=\S+ domain=a.test selectors=s1`},
		{"b.log", `msg="dkim: verified" client=\S+ id=\S+ results="dkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b=`},
		{"c.log", `msg="dkim: verified" client=\S+ id=\S+ results="dkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b=`},
	} {
		if !regexp.MustCompile(c.want).MatchString(logs(c.log)) {
			t.Errorf("%s has no line like %s:\n%s", c.log, c.want, logs(c.log))
		}
	}
	eml := logs("message.eml")
	for _, want := range []string{"Authentication-Results: c.test;", "Authentication-Results: b.test;", "DKIM-Signature: ", "To: alice@c.test"} {
		if !strings.Contains(eml, want) {
			t.Errorf("message.eml lacks %q:\n%s", want, eml)
		}
	}

	// The `$ command` lines of the DKIM section, each with the output the
	// README shows after it.
	for _, block := range readmeBlocks(dkimSec, "") {
		if !strings.HasPrefix(block, "$ ") {
			continue
		}
		for _, step := range strings.Split(block, "$ ")[1:] {
			cmd, want, _ := strings.Cut(step, "\n")
			got := sh.run("dkim-verify", "cd tour\n"+readmeRewrite(cmd)+" || true\n")
			if normalize(got) != normalize(want) {
				t.Errorf("$ %s\nprinted\n%s\nthe README shows\n%s", cmd, got, want)
			}
		}
	}
}

// TestREADMESendAndRead runs the send/read tour as the README shows it and
// compares the listing and the message with the README's.
func TestREADMESendAndRead(t *testing.T) {
	sec := readmeSection(t, readme(t), "### Sending and reading mail")
	sh := readmeBlocks(sec, "sh")
	shown := readmeBlocks(sec, "")
	if len(sh) != 1 || len(shown) < 1 {
		t.Fatalf("the send/read tour has %d sh blocks and %d output blocks", len(sh), len(shown))
	}
	dir := t.TempDir()
	copyTestdata(t, dir)
	out := newTourShell(t, dir).run("send-and-read", readmeRewrite(sh[0]))
	// relay user add speaks first; relay send prints the queue ID.
	loc := regexp.MustCompile(`(?m)^[0-9A-Z]{13}\n`).FindStringIndex(out)
	if loc == nil {
		t.Fatalf("relay send printed no queue ID:\n%s", out)
	}
	rest := out[loc[1]:]
	if normalize(rest) != normalize(shown[0]) {
		t.Errorf("the tour printed\n%s\nthe README shows\n%s", rest, shown[0])
	}
	blog, err := os.ReadFile(filepath.Join(dir, "tour2", "b.log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "relay b.test: SMTP on 127.0.24.6:2525; POP3 on 127.0.24.6:1100; "; !strings.HasPrefix(string(blog), want) &&
		!strings.Contains(string(blog), "\n"+want) {
		t.Errorf("b.log does not say %q:\n%s", want, blog)
	}
}
