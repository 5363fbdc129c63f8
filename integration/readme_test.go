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
// `go build -o relay ../cmd/relay`.
func readmeRewrite(s string) string {
	s = readmeAddr.ReplaceAllString(s, "127.0.24.$1")
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
