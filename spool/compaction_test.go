package spool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// compactionChild names the spool directory the child process of
// TestCompactionHeap compacts.
const compactionChild = "RELAY_SPOOL_COMPACT_DIR"

// TestCompactionHeap fills a spool with 200,000 deferred messages of prose,
// then compacts all of it (Flatten) in a fresh process, which reports the
// peak of its anonymous memory: what a relay restarted on such a queue
// adds while Badger compacts. With Badger's default block compression and
// table sizes it reached 294 MiB; with the spool's settings, 64 MiB.
// It takes about half a minute, so it runs only with RELAY_SCALE=1.
func TestCompactionHeap(t *testing.T) {
	if dir := os.Getenv(compactionChild); dir != "" {
		compactAndReport(t, dir)
		return
	}
	if os.Getenv("RELAY_SCALE") == "" {
		t.Skip("set RELAY_SCALE=1 to measure the heap of a big compaction")
	}
	dir := t.TempDir()
	fillProse(t, dir, 200000)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCompactionHeap$", "-test.v")
	cmd.Env = append(os.Environ(), compactionChild+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	i := strings.Index(string(out), "peak anonymous ")
	if i < 0 {
		t.Fatalf("child printed no peak:\n%s", out)
	}
	var mib int
	var took string
	fmt.Sscanf(string(out[i:]), "peak anonymous %d MiB in %s", &mib, &took)
	t.Logf("compacting 200,000 queued messages: peak anonymous memory %d MiB, %s", mib, took)
	if mib > 150 {
		t.Errorf("peak anonymous memory %d MiB while compacting, want <= 150", mib)
	}
}

func compactAndReport(t *testing.T, dir string) {
	s, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop, done := make(chan struct{}), make(chan struct{})
	var peak int64
	go func() {
		defer close(done)
		for {
			peak = max(peak, statusKB("RssAnon"))
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	if err := s.db.Flatten(2); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	close(stop)
	<-done
	fmt.Printf("peak anonymous %d MiB in %v\n", peak>>10, took.Round(time.Millisecond))
}

// statusKB reads a field of /proc/self/status, in KiB.
func statusKB(field string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// fillProse enqueues n one-recipient messages of about 1 KiB of words and
// defers each by a day.
func fillProse(t *testing.T, dir string, n int) {
	s, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	words := strings.Fields("the of and to in is you that it he was for on are as with his they at be this have from or one " +
		"had by word but not what all were we when your can said there use an each which she do how their if will up " +
		"other about out many then them these so some her would make like him into time has look two more write go see " +
		"queue relay message delivery server account invoice meeting tomorrow report attached please regards thanks")
	next := time.Now().Add(24 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				r := rand.New(rand.NewPCG(uint64(i), 7))
				body := []byte(fmt.Sprintf("Subject: deferred %d\r\n\r\n", i))
				for len(body) < 1000 {
					body = append(append(body, words[r.IntN(len(words))]...), ' ')
					if r.IntN(12) == 0 {
						body = append(body, "\r\n"...)
					}
				}
				id, err := s.Enqueue(context.Background(), Envelope{From: "<a@src.test>"}, []Recipient{{To: fmt.Sprintf("<u%d@dead.test>", i)}}, body)
				if err == nil {
					_, err = s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 4.4.1 connection refused", NextAttempt: next}}, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
