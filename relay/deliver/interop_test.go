package deliver

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// TestDeliverToPostfixSink delivers to Postfix's smtp-sink, a real peer
// that offers PIPELINING and DSN, and reads back what it dumped: the
// envelope with its DSN parameters, and the message with its dots
// unstuffed.
func TestDeliverToPostfixSink(t *testing.T) {
	const sinkBin = "/usr/sbin/smtp-sink"
	if _, err := os.Stat(sinkBin); err != nil {
		t.Skip("smtp-sink not installed (Debian package postfix): skipping the interop test")
	}
	// smtp-sink drops privileges when run as root; the dump directory must
	// be writable by the user it becomes.
	dir, err := os.MkdirTemp("", "sinkdump")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.25.61:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"-d", filepath.Join(dir, "%M."), addr, "10"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	sink := exec.Command(sinkBin, args...)
	sink.Stderr = os.Stderr
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Process.Kill(); sink.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink does not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	if !s.pipelining {
		t.Error("smtp-sink offers PIPELINING; the session does not use it")
	}
	body := "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n"
	for _, id := range []string{"S1", "S2"} {
		msg := testMessage(id, "<s@a.test>", " BODY=8BITMIME RET=HDRS ENVID=env+2B"+id)
		replies, err := s.Send(t.Context(), msg, []string{"<u@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@d.test", "<v@d.test>"}, spool.BytesBody([]byte(body)))
		if err != nil {
			t.Fatalf("Send %s: %v", id, err)
		}
		checkReplies(t, replies, "250 ", "250 ")
	}
	s.Close()

	var dumps []string
	for deadline := time.Now().Add(5 * time.Second); len(dumps) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		dumps, _ = filepath.Glob(filepath.Join(dir, "*"))
	}
	if len(dumps) != 2 {
		t.Fatalf("smtp-sink dumped %d messages, want 2", len(dumps))
	}
	seen := map[string]bool{}
	for _, f := range dumps {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.ReplaceAll(string(b), "\r\n", "\n")
		var id string
		for _, want := range []string{"S1", "S2"} {
			if strings.Contains(got, "X-Relay-Handoff: relay.test "+want+"\n") {
				id = want
			}
		}
		seen[id] = true
		for _, want := range []string{
			"X-Helo-Args: relay.test\n",
			"X-Mail-Args: <s@a.test> BODY=8BITMIME RET=HDRS ENVID=env+2B" + id + "\n",
			"X-Rcpt-Args: <u@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@d.test\n",
			"X-Rcpt-Args: <v@d.test>\n",
			"X-Relay-Handoff: relay.test " + id + "\n" + strings.ReplaceAll(body, "\r\n", "\n"),
		} {
			if !strings.Contains(got, want) {
				t.Errorf("dump %s lacks %q:\n%s", filepath.Base(f), want, got)
			}
		}
	}
	if !seen["S1"] || !seen["S2"] {
		t.Errorf("dumps hold %v, want S1 and S2", seen)
	}
}
