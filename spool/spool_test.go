package spool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

func openT(t testing.TB, opts Options) *Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func env1() Envelope {
	return Envelope{From: "<a@a.test>", MailParams: " SIZE=100 BODY=8BITMIME", Client: "192.0.2.1", Helo: "a.test"}
}

func rcpt1(to string) []Recipient { return []Recipient{{To: to}} }

func mustEnqueue(t testing.TB, s *Spool, env Envelope, rcpts []Recipient, body []byte) string {
	t.Helper()
	id, err := s.Enqueue(context.Background(), env, rcpts, body)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return id
}

func checkBody(t testing.TB, s *Spool, id string, want []byte) {
	t.Helper()
	got, err := s.Body(id)
	if err != nil {
		t.Fatalf("Body(%s): %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Body(%s): got %d bytes, want %d bytes (equal=%v)", id, len(got), len(want), bytes.Equal(got, want))
	}
}

func TestEnqueueGetBody(t *testing.T) {
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now})
	env := Envelope{
		From:       "<@x.test:a@a.test>",
		MailParams: " SIZE=100 BODY=8BITMIME",
		Client:     "2001:db8::1",
		Helo:       "a.test",
		AuthUser:   "alice",
		Hops:       3,
	}
	rcpts := []Recipient{
		{To: "<@a.test,@b.test:u@c.test>", Params: " NOTIFY=FAILURE ORCPT=rfc822;u@c.test",
			Status: StatusDelivered, Attempts: 7, LastReply: "ignored", NextAttempt: t0.Add(time.Hour)},
		{To: "<postmaster>"},
		{To: `<"x y"@d.test>`, Params: " NOTIFY=NEVER"},
	}
	body := []byte("Subject: hi\r\n\r\nline\r\n\x00\xff\xfe binary\r\n.\r\n")
	id := mustEnqueue(t, s, env, rcpts, body)
	if len(id) != IDLen {
		t.Fatalf("id %q: length %d", id, len(id))
	}

	m, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.From != env.From || m.MailParams != env.MailParams || m.Client != env.Client ||
		m.Helo != env.Helo || m.AuthUser != env.AuthUser || m.Hops != 3 || m.Held {
		t.Errorf("envelope mismatch: %+v", m)
	}
	if !m.Received.Equal(t0) {
		t.Errorf("Received = %v, want clock time %v", m.Received, t0)
	}
	if m.Size != int64(len(body)) {
		t.Errorf("Size = %d, want %d", m.Size, len(body))
	}
	if len(m.Recipients) != 3 {
		t.Fatalf("%d recipients", len(m.Recipients))
	}
	for i, r := range m.Recipients {
		if r.To != rcpts[i].To || r.Params != rcpts[i].Params {
			t.Errorf("rcpt %d: %+v", i, r)
		}
		if r.Status != StatusPending || r.Attempts != 0 || r.LastReply != "" || !r.NextAttempt.Equal(t0) {
			t.Errorf("rcpt %d: state %+v, want pending, 0 attempts, due now", i, r)
		}
	}
	checkBody(t, s, id, body)

	// IDs are accepted case-insensitively.
	if m2, err := s.Get(strings.ToLower(id)); err != nil || m2.ID != id {
		t.Errorf("Get(lower) = %v, %v", m2, err)
	}

	evs, err := s.Events(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != EventReceived || evs[0].Rcpt != -1 || !evs[0].At.Equal(t0) ||
		!strings.Contains(evs[0].Text, "auth alice") {
		t.Errorf("events = %+v", evs)
	}

	// An explicit Received time is kept.
	env.Received = t0.Add(-time.Minute)
	id2 := mustEnqueue(t, s, env, rcpt1("<b@b.test>"), nil)
	if m, err := s.Get(id2); err != nil || !m.Received.Equal(t0.Add(-time.Minute)) {
		t.Errorf("Get(id2) = %+v, %v", m, err)
	}
	checkBody(t, s, id2, []byte{})

	for _, bad := range []string{"", "nope", "0000000000000", "ZZZZZZZZZZZZZ", "!!!!!!!!!!!!!"} {
		if _, err := s.Get(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", bad, err)
		}
		if _, err := s.Body(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Body(%q) error = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestEnqueueRejectsBadInput(t *testing.T) {
	s := openT(t, Options{})
	ctx := context.Background()
	cases := []struct {
		env   Envelope
		rcpts []Recipient
	}{
		{env1(), nil},
		{Envelope{}, rcpt1("<b@b.test>")},
		{env1(), []Recipient{{To: "<b@b.test>"}, {To: ""}}},
	}
	for i, c := range cases {
		if _, err := s.Enqueue(ctx, c.env, c.rcpts, []byte("x")); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Enqueue(cctx, env1(), rcpt1("<b@b.test>"), []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled ctx: err = %v", err)
	}
	if n := countMessages(t, s); n != 0 {
		t.Errorf("%d messages stored after rejected enqueues", n)
	}
}

func countMessages(t testing.TB, s *Spool) int {
	t.Helper()
	n := 0
	if err := s.List(func(*Message) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func concurrentBody(g, i int) []byte {
	return fmt.Appendf(nil, "From: g%d\r\n\r\nmessage %d of goroutine %d\r\n%s", g, i, g, strings.Repeat("x", (g*50+i)%3000))
}

func TestConcurrentEnqueue(t *testing.T) {
	const G, N = 64, 50
	s := openT(t, Options{})
	ids := make([][]string, G)
	var wg sync.WaitGroup
	errc := make(chan error, G)
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < N; i++ {
				id, err := s.Enqueue(context.Background(), env1(), rcpt1(fmt.Sprintf("<g%d-%d@c.test>", g, i)), concurrentBody(g, i))
				if err != nil {
					errc <- err
					return
				}
				ids[g] = append(ids[g], id)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for g := 0; g < G; g++ {
		for i, id := range ids[g] {
			if seen[id] {
				t.Fatalf("duplicate ID %s", id)
			}
			seen[id] = true
			if i > 0 && id <= ids[g][i-1] {
				t.Fatalf("goroutine %d: ID %s not after %s", g, id, ids[g][i-1])
			}
			m, err := s.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("<g%d-%d@c.test>", g, i); m.Recipients[0].To != want {
				t.Fatalf("%s: recipient %s, want %s", id, m.Recipients[0].To, want)
			}
			checkBody(t, s, id, concurrentBody(g, i))
		}
	}
	var listed []string
	if err := s.List(func(m *Message) error { listed = append(listed, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != G*N || !sort.StringsAreSorted(listed) {
		t.Fatalf("List: %d IDs, sorted=%v", len(listed), sort.StringsAreSorted(listed))
	}
	due, err := s.Due(time.Now().Add(time.Minute), 10*G*N)
	if err != nil || len(due) != G*N {
		t.Fatalf("Due: %d entries, %v", len(due), err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	s := openT(t, Options{Dir: dir, Now: clk.Now})
	big := randomBytes(3*ChunkSize+17, 1)
	type msg struct {
		id   string
		body []byte
	}
	var msgs []msg
	for i := 0; i < 20; i++ {
		body := fmt.Appendf(nil, "body %d\r\n", i)
		if i == 7 {
			body = big
		}
		clk.Set(t0.Add(time.Duration(i) * time.Second))
		id := mustEnqueue(t, s, env1(), []Recipient{{To: fmt.Sprintf("<r%d@c.test>", i)}, {To: "<z@c.test>", Params: " NOTIFY=NEVER"}}, body)
		msgs = append(msgs, msg{id, body})
	}
	before, _ := s.Due(t0.Add(time.Hour), 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, Options{Dir: dir, Now: clk.Now})
	for i, m := range msgs {
		got, err := s.Get(m.id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Recipients[0].To != fmt.Sprintf("<r%d@c.test>", i) || got.Recipients[1].Params != " NOTIFY=NEVER" ||
			!got.Received.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Errorf("after reopen: %+v", got)
		}
		checkBody(t, s, m.id, m.body)
	}
	if n := countMessages(t, s); n != len(msgs) {
		t.Errorf("List after reopen: %d messages, want %d", n, len(msgs))
	}
	after, err := s.Due(t0.Add(time.Hour), 100)
	if err != nil || len(after) != 40 || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("Due after reopen differs: %v (%v)\nbefore %v", after, err, before)
	}
}

func TestIDsIncreaseAcrossReopenWithClockBack(t *testing.T) {
	for _, deleteOld := range []bool{false, true} {
		t.Run(fmt.Sprintf("deleteOld=%v", deleteOld), func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock(t0)
			s := openT(t, Options{Dir: dir, Now: clk.Now})
			var maxOld string
			for i := 0; i < 10; i++ {
				maxOld = max(maxOld, mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), []byte("x")))
			}
			if deleteOld {
				// Messages get retired and deleted; their IDs must never
				// come back. Remove them behind the spool's back.
				if err := s.db.DropPrefix([]byte(prefixMessage)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			clk.Set(t0.Add(-time.Hour))
			s = openT(t, Options{Dir: dir, Now: clk.Now})
			prev := maxOld
			for i := 0; i < 10; i++ {
				id := mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), []byte("y"))
				if id <= prev {
					t.Fatalf("ID %s after reopen with clock back is not above %s", id, prev)
				}
				prev = id
			}
		})
	}
}

func TestIDsAreTimeOrdered(t *testing.T) {
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now})
	id := mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), nil)
	v, err := parseID(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.UnixMicro(int64(v)); !got.Equal(t0.Truncate(time.Microsecond)) {
		t.Errorf("ID %s encodes %v, want %v", id, got, t0)
	}
	clk.Set(t0.Add(time.Hour))
	id2 := mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), nil)
	v2, _ := parseID(id2)
	if time.UnixMicro(int64(v2)).Sub(time.UnixMicro(int64(v))) != time.Hour {
		t.Errorf("IDs %s %s are not an hour apart", id, id2)
	}
}

func TestDue(t *testing.T) {
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now})
	if _, ok, err := s.NextDue(); ok || err != nil {
		t.Fatalf("NextDue on empty spool = %v, %v", ok, err)
	}
	enqAt := func(d time.Duration, env Envelope, n int) string {
		clk.Set(t0.Add(d))
		var rs []Recipient
		for i := 0; i < n; i++ {
			rs = append(rs, Recipient{To: fmt.Sprintf("<r%d@c.test>", i)})
		}
		return mustEnqueue(t, s, env, rs, []byte("x"))
	}
	a := enqAt(10*time.Second, env1(), 2)
	b := enqAt(5*time.Second, env1(), 1)
	c := enqAt(7*time.Second, env1(), 1)
	held := env1()
	held.Held = true
	h := enqAt(1*time.Second, held, 1)

	str := func(ds []Due) string {
		var parts []string
		for _, d := range ds {
			name := map[string]string{a: "a", b: "b", c: "c", h: "h"}[d.ID]
			parts = append(parts, fmt.Sprintf("%s%d@%v", name, d.Rcpt, d.At.Sub(t0)))
		}
		return strings.Join(parts, " ")
	}
	cases := []struct {
		now   time.Duration
		limit int
		want  string
	}{
		{100 * time.Second, 100, "b0@5s c0@7s a0@10s a1@10s"},
		{100 * time.Second, 3, "b0@5s c0@7s a0@10s"},
		{100 * time.Second, 1, "b0@5s"},
		{7 * time.Second, 100, "b0@5s c0@7s"},
		{7*time.Second - 1, 100, "b0@5s"},
		{4 * time.Second, 100, ""},
	}
	for _, tc := range cases {
		got, err := s.Due(t0.Add(tc.now), tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if str(got) != tc.want {
			t.Errorf("Due(t0+%v, %d) = %q, want %q", tc.now, tc.limit, str(got), tc.want)
		}
	}
	next, ok, err := s.NextDue()
	if err != nil || !ok || !next.Equal(t0.Add(5*time.Second)) {
		t.Errorf("NextDue = %v, %v, %v; want t0+5s", next, ok, err)
	}
	if _, err := s.Due(t0, 0); err == nil {
		t.Error("Due with limit 0: no error")
	}
	// The held message is stored but not scheduled.
	if m, err := s.Get(h); err != nil || !m.Held || m.Recipients[0].Status != StatusPending {
		t.Errorf("held message: %+v, %v", m, err)
	}
	// r/ NextAttempt equals the time in the t/ key (later tasks depend on it).
	m, _ := s.Get(a)
	if !m.Recipients[1].NextAttempt.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("NextAttempt %v", m.Recipients[1].NextAttempt)
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestLargeBodies(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	sizes := []int{10 << 20, ChunkSize - 1, ChunkSize, ChunkSize + 1, valueThreshold - 1, valueThreshold, 2*ChunkSize + 5}
	ids := make([]string, len(sizes))
	for i, n := range sizes {
		ids[i] = mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), randomBytes(n, uint64(i)))
	}
	for i, n := range sizes {
		checkBody(t, s, ids[i], randomBytes(n, uint64(i)))
		if m, err := s.Get(ids[i]); err != nil || m.Size != int64(n) {
			t.Errorf("Get: %v %v", m, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	for i, n := range sizes {
		checkBody(t, s, ids[i], randomBytes(n, uint64(i)))
	}
}

func TestClosed(t *testing.T) {
	s := openT(t, Options{})
	id := mustEnqueue(t, s, env1(), rcpt1("<b@b.test>"), []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@b.test>"), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if _, err := s.Due(time.Now(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Due after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseWaitsForInflight: Close during concurrent enqueues never makes
// an Enqueue report success for a message that is then missing.
func TestCloseWaitsForInflight(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	var mu sync.Mutex
	var ok []string
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@b.test>"), []byte("x"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok = append(ok, id)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openT(t, Options{Dir: dir})
	for _, id := range ok {
		if _, err := s.Get(id); err != nil {
			t.Fatalf("acknowledged %s missing after Close: %v", id, err)
		}
	}
	if len(ok) == 0 {
		t.Fatal("no enqueues succeeded")
	}
}

var errDisk = errors.New("injected disk failure")

// TestSyncFailure: a failed sync fails every waiter of that round, and the
// spool refuses new messages afterwards.
func TestSyncFailure(t *testing.T) {
	var armed atomic.Bool
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	var calls atomic.Int32
	clk := newClock(t0) // frozen: no ID-ceiling write during the test
	s := openT(t, Options{Now: clk.Now, syncWrap: func(real func() error) error {
		if !armed.Load() {
			return real()
		}
		switch calls.Add(1) {
		case 1: // first round: hold it until the others queue up behind it
			entered <- struct{}{}
			<-gate
			return real()
		default:
			return errDisk
		}
	}})
	mustEnqueue(t, s, env1(), rcpt1("<warmup@c.test>"), nil) // reserves IDs
	armed.Store(true)

	const W = 16
	errs := make(chan error, W)
	firstErr := make(chan error, 1)
	go func() {
		_, err := s.Enqueue(context.Background(), env1(), rcpt1("<first@c.test>"), []byte("x"))
		firstErr <- err
	}()
	<-entered // round 1 is syncing
	var wg sync.WaitGroup
	for i := 0; i < W; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@c.test>"), []byte("y"))
			errs <- err
		}()
	}
	// Wait until all W have committed and joined round 2.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.group.mu.Lock()
		n := s.group.next.waiters
		s.group.mu.Unlock()
		if n == W {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d waiters joined", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if err := <-firstErr; err != nil {
		t.Fatalf("first enqueue (synced fine) failed: %v", err)
	}
	for i := 0; i < W; i++ {
		if err := <-errs; !errors.Is(err, errDisk) {
			t.Errorf("waiter of the failed round: err = %v, want %v", err, errDisk)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d sync calls, want 2 (one per round)", n)
	}
	// Sticky: no further acceptance, and no further sync attempts.
	if _, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@c.test>"), []byte("z")); !errors.Is(err, errDisk) {
		t.Errorf("enqueue after failed sync: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("sync retried after failure: %d calls", n)
	}
}

func TestSyncFailureSyncEach(t *testing.T) {
	var fail atomic.Bool
	s := openT(t, Options{SyncEachCommit: true, syncWrap: func(real func() error) error {
		if fail.Load() {
			return errDisk
		}
		return real()
	}})
	mustEnqueue(t, s, env1(), rcpt1("<b@c.test>"), []byte("x"))
	fail.Store(true)
	if _, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@c.test>"), []byte("x")); !errors.Is(err, errDisk) {
		t.Errorf("err = %v", err)
	}
}

// TestEnqueueWaitsForSync: Enqueue does not return before the sync that
// covers its commit has completed.
func TestEnqueueWaitsForSync(t *testing.T) {
	var armed atomic.Bool
	gate := make(chan struct{})
	var synced atomic.Bool
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now, syncWrap: func(real func() error) error {
		if armed.Load() {
			<-gate
		}
		err := real()
		if armed.Load() {
			synced.Store(true)
		}
		return err
	}})
	mustEnqueue(t, s, env1(), rcpt1("<warmup@c.test>"), nil) // reserves IDs
	armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@c.test>"), []byte("x"))
		if err == nil && !synced.Load() {
			err = errors.New("returned before sync completed")
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Enqueue returned while sync was blocked: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommitBatches: with a slow disk, concurrent enqueues share syncs;
// with SyncEachCommit, every enqueue syncs.
func TestGroupCommitBatches(t *testing.T) {
	const G, N = 32, 10
	for _, each := range []bool{false, true} {
		t.Run(fmt.Sprintf("SyncEachCommit=%v", each), func(t *testing.T) {
			s := openT(t, Options{SyncEachCommit: each, syncWrap: func(real func() error) error {
				time.Sleep(2 * time.Millisecond)
				return real()
			}})
			before := s.syncs.Load()
			var wg sync.WaitGroup
			for g := 0; g < G; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < N; i++ {
						if _, err := s.Enqueue(context.Background(), env1(), rcpt1("<b@c.test>"), []byte("x")); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			syncs := s.syncs.Load() - before
			t.Logf("%d enqueues, %d syncs", G*N, syncs)
			if each && syncs < G*N {
				t.Errorf("sync-each: %d syncs for %d enqueues", syncs, G*N)
			}
			if !each && syncs > G*N/4 {
				t.Errorf("group commit: %d syncs for %d enqueues; not grouping", syncs, G*N)
			}
		})
	}
}

// TestTooBigIsAtomic: a transaction Badger refuses leaves no trace.
func TestTooBigIsAtomic(t *testing.T) {
	s := openT(t, Options{})
	rcpts := make([]Recipient, 40000)
	for i := range rcpts {
		rcpts[i] = Recipient{To: fmt.Sprintf("<user%d@c.test>", i)}
	}
	_, err := s.Enqueue(context.Background(), env1(), rcpts, randomBytes(3*ChunkSize, 9))
	if !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("err = %v, want ErrTxnTooBig", err)
	}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); !bytes.HasPrefix(k, []byte(prefixState)) {
				t.Errorf("left behind: %q", k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	id := mustEnqueue(t, s, env1(), rcpts[:100], []byte("ok"))
	checkBody(t, s, id, []byte("ok"))
}

func TestGCLoop(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: 5 * time.Millisecond})
	var ids []string
	for i := 0; i < 30; i++ {
		ids = append(ids, mustEnqueue(t, s, env1(), rcpt1("<b@c.test>"), randomBytes(200<<10, uint64(i))))
		s.runGC() // also directly, concurrently with the loop
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	s = openT(t, Options{Dir: dir})
	for i, id := range ids {
		checkBody(t, s, id, randomBytes(200<<10, uint64(i)))
	}
}

func TestIDFormat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := []uint64{0, 1, 31, 32, 1<<64 - 1, 1 << 63, uint64(t0.UnixMicro())}
	for i := 0; i < 1000; i++ {
		vals = append(vals, r.Uint64()>>(r.IntN(64)))
	}
	for _, v := range vals {
		s := formatID(v)
		if len(s) != IDLen {
			t.Fatalf("formatID(%d) = %q", v, s)
		}
		got, err := parseID(s)
		if err != nil || got != v {
			t.Fatalf("parseID(formatID(%d)) = %d, %v", v, got, err)
		}
		if got, err := parseID(strings.ToLower(s)); err != nil || got != v {
			t.Fatalf("parseID(lower) = %d, %v", got, err)
		}
	}
	for i := 0; i < 1000; i++ {
		a, b := vals[r.IntN(len(vals))], vals[r.IntN(len(vals))]
		if (a < b) != (formatID(a) < formatID(b)) {
			t.Fatalf("order of %d, %d not kept: %s %s", a, b, formatID(a), formatID(b))
		}
	}
	for _, bad := range []string{"", "G000000000000", "0000000000000U", "000000000000U", "00000000000!0"} {
		if _, err := parseID(bad); err == nil {
			t.Errorf("parseID(%q): no error", bad)
		}
	}
}

func TestCodecRejectsCorruption(t *testing.T) {
	m := encodeMessage(&msgRecord{Envelope: Envelope{From: "<a@b>", MailParams: " X=1", Received: t0, Client: "c", Helo: "h", AuthUser: "u", Hops: 2, Held: true}, Size: 5, NRcpt: 1, ChunkSize: ChunkSize})
	r, err := encodeRcpt(&Recipient{To: "<@x:y@z>", Params: " NOTIFY=NEVER", Status: StatusDeferred, Attempts: 3, LastReply: "451 later", NextAttempt: t0})
	if err != nil {
		t.Fatal(err)
	}
	e := encodeEvent(&Event{At: t0, Kind: "received", Rcpt: -1, Text: "t"})
	if got, err := decodeMessage(m); err != nil || got.From != "<a@b>" || !got.Held || got.Hops != 2 || !got.Received.Equal(t0) {
		t.Fatalf("decodeMessage = %+v, %v", got, err)
	}
	if got, err := decodeRcpt(r); err != nil || got.Status != StatusDeferred || got.Attempts != 3 || !got.NextAttempt.Equal(t0) || got.LastReply != "451 later" {
		t.Fatalf("decodeRcpt = %+v, %v", got, err)
	}
	// Every truncation is an error, never a panic. (The last two bytes of
	// m are appended optional fields: without them m reads as an older
	// record.)
	for i := 0; i < len(m)-2; i++ {
		if _, err := decodeMessage(m[:i]); err == nil {
			t.Errorf("decodeMessage(truncated to %d): no error", i)
		}
	}
	for i := 0; i < len(r)-1; i++ { // the last byte of r is optional too (DelayWarned)
		if _, err := decodeRcpt(r[:i]); err == nil {
			t.Errorf("decodeRcpt(truncated to %d): no error", i)
		}
	}
	for i := 0; i < len(e); i++ {
		if _, err := decodeEvent(e[:i]); err == nil {
			t.Errorf("decodeEvent(truncated to %d): no error", i)
		}
	}
	if _, err := decodeMessage(append([]byte{2}, m[1:]...)); err == nil {
		t.Error("unknown version accepted")
	}
	if _, err := encodeRcpt(&Recipient{To: "<a@b>", Status: "weird"}); err == nil {
		t.Error("unknown status encoded")
	}
	// Expanded is appended only when set, and read back.
	x, err := encodeRcpt(&Recipient{To: "<list@b>", Status: StatusPending, Expanded: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeRcpt(x); err != nil || !got.Expanded || got.To != "<list@b>" {
		t.Errorf("decodeRcpt(expanded) = %+v, %v", got, err)
	}
	if got, _ := decodeRcpt(r); got.Expanded {
		t.Error("a recipient without the field reads as expanded")
	}
}

// --- crash test ---

const crashEnv = "RELAY_SPOOL_CRASH_DIR"

var crashLine = regexp.MustCompile(`^([0-9A-Z]{13}) (\S+)$`)

// crashBody derives a message body from its seed: mostly a few KiB, some
// in the value log, a few spanning several chunks.
func crashBody(seed string) []byte {
	h := fnv.New64a()
	h.Write([]byte(seed))
	v := h.Sum64()
	n := 200 + int(v%8000)
	switch v % 100 {
	case 0:
		n = ChunkSize + int(v%(ChunkSize/2))
	case 1, 2, 3, 4, 5:
		n = valueThreshold + int(v%200000)
	}
	return randomBytes(n, v)
}

// TestCrashChild is not a test: TestCrashRecovery runs the test binary
// with it selected to get a process it can SIGKILL while it enqueues.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	s, err := Open(Options{Dir: dir, GCInterval: 50 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	for w := 0; w < 8; w++ {
		go func() {
			for i := 0; ; i++ {
				seed := fmt.Sprintf("%d.%d.%d", os.Getpid(), w, i)
				id, err := s.Enqueue(context.Background(), env1(), rcpt1("<"+seed+"@c.test>"), crashBody(seed))
				if err != nil {
					fmt.Fprintln(os.Stderr, "child enqueue:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%s %s\n", id, seed) // one write(2) per line
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Minute)
	os.Exit(4) // the parent should have killed us long ago
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	dir := t.TempDir()
	type acked struct{ id, seed string }
	var all []acked
	prevMax := ""
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var (
			mu  sync.Mutex
			got []acked
		)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				// Each line is one write(2) of less than PIPE_BUF bytes,
				// so the kill cannot cut a line in half.
				if m := crashLine.FindStringSubmatch(sc.Text()); m != nil {
					mu.Lock()
					got = append(got, acked{m[1], m[2]})
					mu.Unlock()
				}
			}
		}()
		// Kill after about a second, but give a slow disk the chance to
		// acknowledge a few messages first.
		time.Sleep(time.Second)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= 20 {
				break
			}
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		<-readDone
		cmd.Wait()
		if len(got) == 0 {
			t.Fatalf("round %d: child acknowledged nothing; stderr:\n%s", round, stderr.String())
		}
		for _, a := range got {
			if a.id <= prevMax {
				t.Errorf("round %d: ID %s not above previous run's %s", round, a.id, prevMax)
			}
		}
		for _, a := range got {
			prevMax = max(prevMax, a.id)
		}
		all = append(all, got...)

		s, err := Open(Options{Dir: dir, GCInterval: -1})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		for _, a := range all {
			m, err := s.Get(a.id)
			if err != nil {
				t.Fatalf("round %d: acknowledged %s (%s) lost: %v", round, a.id, a.seed, err)
			}
			if m.Recipients[0].To != "<"+a.seed+"@c.test>" {
				t.Fatalf("round %d: %s has recipient %s, want seed %s", round, a.id, m.Recipients[0].To, a.seed)
			}
			checkBody(t, s, a.id, crashBody(a.seed))
		}
		n := countMessages(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged before SIGKILL, %d total acknowledged, %d stored", round, len(got), len(all), n)
	}
}

// TestGroupSyncWaitsForInflightCommits: the syncer holds a round open while
// an announced commit is in flight, then syncs it together with the rest.
func TestGroupSyncWaitsForInflightCommits(t *testing.T) {
	var calls atomic.Int32
	g := newGroupSync(func() error { calls.Add(1); return nil }, time.Minute)
	defer g.stop()
	g.enter() // a commit in flight
	bDone := make(chan error, 1)
	go func() { bDone <- g.wait(context.Background(), false) }()
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 0 {
		t.Fatalf("synced %d times while a commit was in flight", n)
	}
	if err := g.wait(context.Background(), true); err != nil { // the in-flight commit joins
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d syncs, want 1 shared", n)
	}

	// The wait is bounded: a commit that never joins delays, not blocks.
	g2 := newGroupSync(func() error { return nil }, 20*time.Millisecond)
	defer g2.stop()
	g2.enter()
	start := time.Now()
	if err := g2.wait(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 15*time.Millisecond || d > 5*time.Second {
		t.Errorf("waited %v, want about the 20ms bound", d)
	}
	g2.leave()
}

// TestImmutableWALsAreSynced: when a memtable rotates, the syncer notices
// the new WAL and fsyncs the old one (db.Sync only covers the new one).
func TestImmutableWALsAreSynced(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	s.walMu.Lock()
	first := s.walSynced
	s.walMu.Unlock()
	body := randomBytes(valueThreshold-1024, 7) // stays in the LSM tree
	var ids []string
	for i := 0; i < 600; i++ { // ~38 MiB through 16 MiB memtables
		ids = append(ids, mustEnqueue(t, s, env1(), rcpt1("<b@c.test>"), body))
	}
	s.walMu.Lock()
	last, fsyncs := s.walSynced, s.walFsyncs
	s.walMu.Unlock()
	t.Logf("WAL fids %d -> %d, %d immutable WALs fsynced", first, last, fsyncs)
	if last < first+2 {
		t.Errorf("walSynced went from %d to %d; rotations not seen", first, last)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	for _, id := range ids[len(ids)-5:] {
		checkBody(t, s, id, body)
	}
}
