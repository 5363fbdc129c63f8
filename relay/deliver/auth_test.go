package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/queue"
)

// loginServer is an implicit-TLS server (RFC 8314) offering only AUTH
// LOGIN, which accepts user/password and records the lines it read.
func loginServer(t *testing.T, cert tls.Certificate, user, password string) (addr string, lines func() []string) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.27.40:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	b64 := base64.StdEncoding.EncodeToString
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				io.WriteString(c, "220 smtp.test ESMTP\r\n")
				step := ""
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					mu.Lock()
					got = append(got, line)
					mu.Unlock()
					var reply string
					switch {
					case step == "user":
						step, reply = "password", "334 "+b64([]byte("Password:"))
						if line != b64([]byte(user)) {
							step, reply = "", "535 5.7.8 bad user"
						}
					case step == "password":
						step, reply = "", "235 2.7.0 welcome"
						if line != b64([]byte(password)) {
							reply = "535 5.7.8 Authentication credentials invalid"
						}
					case strings.HasPrefix(line, "EHLO"):
						reply = "250-smtp.test\r\n250-AUTH LOGIN\r\n250 PIPELINING"
					case line == "AUTH LOGIN":
						step, reply = "user", "334 "+b64([]byte("Username:"))
					case line == "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						reply = "250 ok"
					}
					io.WriteString(c, reply+"\r\n")
				}
			})
		}
	})
	return l.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

func authHop(addr, password string) queue.Hop {
	return queue.Hop{Key: "smtp:" + addr, Addrs: []string{addr}, TLS: "implicit", ServerName: "mx.test",
		Auth: &queue.Auth{User: "relay@example.org", Password: password}}
}

// TestAuthLogin: over implicit TLS, with only LOGIN offered, the login
// goes as two base64 answers; a wrong password ends the attempt with the
// server's reply and never shows the password.
func TestAuthLogin(t *testing.T) {
	cert, pool := selfSigned(t)
	addr, lines := loginServer(t, cert, "relay@example.org", "pw 1")
	d := testDeliverer(nil, pool)
	s := mustDial(t, d, authHop(addr, "pw 1"))
	if s.tls == nil || !s.verified {
		t.Fatal("session is not over verified TLS")
	}
	got := strings.Join(lines(), "|")
	want := "EHLO relay.test|AUTH LOGIN|" + base64.StdEncoding.EncodeToString([]byte("relay@example.org")) + "|" + base64.StdEncoding.EncodeToString([]byte("pw 1"))
	if got != want {
		t.Errorf("server read %q, want %q", got, want)
	}

	_, err := d.Dial(context.Background(), authHop(addr, "wrong"))
	if err == nil || !refusedLogin(err) || !strings.Contains(err.Error(), "535 5.7.8 Authentication credentials invalid") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte("wrong"))) {
		t.Errorf("the error shows the password: %v", err)
	}
}

// TestAuthNeedsVerifiedTLS: a hop with a login and a TLS mode that does
// not verify is refused before any connection.
func TestAuthNeedsVerifiedTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.27.41:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, mode := range []string{"opportunistic", "none"} {
		hop := authHop(l.Addr().String(), "pw")
		hop.TLS = mode
		if _, err := testDeliverer(nil, nil).Dial(context.Background(), hop); err == nil || !strings.Contains(err.Error(), "AUTH needs tls = require or implicit") {
			t.Errorf("tls = %s with AUTH: %v", mode, err)
		}
	}
}
