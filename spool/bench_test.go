package spool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkEnqueue measures durable acceptances per second with 32
// concurrent enqueuers and 1 KiB bodies:
//
//	group-commit          SyncWrites=false, one shared storage sync per round (the spool's mode)
//	group-commit-nodelay  the same without waiting for in-flight commits (for reference)
//	sync-each             SyncWrites=false, every Enqueue syncs storage itself (Options.SyncEachCommit)
//	badger-syncwrites     Badger's own SyncWrites=true, no sync of ours (for reference)
//
// Run: go test ./spool -run '^$' -bench Enqueue -benchtime 3s
// It logs the group-commit/sync-each ratio measured in the same run.
func BenchmarkEnqueue(b *testing.B) {
	const workers = 32
	variants := []struct {
		name string
		opts Options
	}{
		{"group-commit", Options{}},
		{"group-commit-nodelay", Options{syncDelay: -1}},
		{"sync-each", Options{SyncEachCommit: true}},
		{"badger-syncwrites", Options{badgerSyncWrites: true}},
	}
	rate := map[string]float64{}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			opts := v.opts
			opts.Dir = b.TempDir()
			opts.GCInterval = -1
			s, err := Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			body := make([]byte, 1024)
			for i := range body {
				body[i] = "abcdefghijklmnopqrstuvwxyz0123456789\r\n"[i%38]
			}
			env := Envelope{From: "<sender@a.test>", MailParams: " SIZE=1024", Client: "192.0.2.1", Helo: "a.test"}
			rcpts := []Recipient{{To: "<rcpt@b.test>", Params: " NOTIFY=FAILURE"}}
			syncs0 := s.syncs.Load()

			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Enqueue(context.Background(), env, rcpts, body); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()

			r := float64(b.N) / elapsed.Seconds()
			rate[v.name] = r
			b.ReportMetric(r, "msgs/s")
			if n := s.syncs.Load() - syncs0; n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "msgs/sync")
			}
		})
	}
	// Printed, not logged: a parent benchmark's log only shows with -v.
	if g, e := rate["group-commit"], rate["sync-each"]; g > 0 && e > 0 {
		fmt.Printf("BenchmarkEnqueue: group-commit %.0f msgs/s / sync-each %.0f msgs/s = %.2fx (same run, %d enqueuers)\n", g, e, g/e, workers)
	}
}
