package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/admin/api"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// relayBinary builds ./cmd/relay once per test run.
func relayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relay-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "relay")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/relay").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeAddr finds a free TCP port on the loopback address ip.
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a relay daemon running as a subprocess.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	log  *os.File
	done chan struct{}
}

// startProc runs `relay serve --config cfgPath [extra...]` and waits
// until addr accepts connections.
func startProc(t *testing.T, cfgPath, addr string, extra ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(cfgPath+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(relayBinary(t), append([]string{"serve", "--config", cfgPath}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, addr: addr, log: logf, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(); logf.Close() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.done:
			out, _ := os.ReadFile(cfgPath + ".log")
			t.Fatalf("relay exited at start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		p.kill()
		return fmt.Errorf("relay did not stop within 40s of SIGTERM")
	}
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("relay exited with %v", p.cmd.ProcessState)
	}
	return nil
}

// queuesDrained waits until the queues of the relays whose admin sockets
// socks names (relay name -> socket) have been empty on three polls in a
// row (a message in flight between two polls is in one queue or the
// other, so one poll of several relays could miss it).
func queuesDrained(t *testing.T, socks map[string]string, timeout time.Duration) bool {
	t.Helper()
	names := make([]string, 0, len(socks))
	for n := range socks {
		names = append(names, n)
	}
	slices.Sort(names)
	deadline := time.Now().Add(timeout)
	clean := 0
	last := ""
	for time.Now().Before(deadline) {
		total := 0
		var where []string
		for _, n := range names {
			a := client.NewAdmin(socks[n])
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			list, err := a.List(ctx, api.Filter{})
			cancel()
			if err != nil {
				where = append(where, n+": "+err.Error())
				total++
				continue
			}
			total += len(list)
			if len(list) > 0 {
				where = append(where, fmt.Sprintf("%s: %d", n, len(list)))
			}
		}
		if total == 0 {
			clean++
			if clean == 3 {
				return true
			}
		} else {
			clean = 0
			last = strings.Join(where, ", ")
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Errorf("queues not empty after %v: %s", timeout, last)
	return false
}

// seedAndLength reads a long test's seed and length from the environment
// variables seedVar and lengthVar, with their defaults.
func seedAndLength(t *testing.T, seedVar string, seed uint64, lengthVar string, length time.Duration) (uint64, time.Duration) {
	t.Helper()
	if s := os.Getenv(seedVar); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedVar, s, err)
		}
		seed = v
	}
	if s := os.Getenv(lengthVar); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", lengthVar, s, err)
		}
		length = v
	}
	return seed, length
}

// load runs workers goroutines, each calling step with its own generator
// (seeded from seed and its number), its number and n = 0, 1, 2, ...,
// until the returned function is called; that returns once all have
// stopped.
func load(seed uint64, workers int, step func(rng *rand.Rand, worker, n int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		rng := rand.New(rand.NewPCG(seed, uint64(w+1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				step(rng, w, n)
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}
