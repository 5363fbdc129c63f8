package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// vmHWM is the peak resident set size of a live process, in KiB
// (VmHWM in /proc/PID/status).
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return statusKiB(b, "VmHWM")
}

// statusKiB reads a "Key:   123 kB" field of /proc/PID/status.
func statusKiB(status []byte, key string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("/proc status: bad %s line %q", key, line)
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc status: no %s", key)
}

// statPPID is the parent PID in the contents of /proc/PID/stat
// ("pid (comm) state ppid ..."; comm may hold spaces and parentheses).
func statPPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no ')' in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc stat: short %q", stat)
	}
	return strconv.Atoi(f[1])
}

// treeRSS is the summed resident set size, in KiB, of root and all its
// descendants at this moment. Shared pages count once per process.
func treeRSS(root int) (int64, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if ppid, err := statPPID(stat); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var total int64
	pageKiB := int64(os.Getpagesize() / 1024)
	for todo := []int{root}; len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		statm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
		if err != nil {
			if pid == root {
				return 0, err
			}
			continue
		}
		if f := strings.Fields(string(statm)); len(f) >= 2 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			total += pages * pageKiB
		}
	}
	return total, nil
}

// rssSampler samples treeRSS(root) every interval and keeps the peak.
type rssSampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  int64
	err   error
}

func sampleTreeRSS(root int, interval time.Duration) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			kib, err := treeRSS(root)
			if err != nil {
				s.err = err
				return
			}
			s.peak = max(s.peak, kib)
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the peak in KiB.
func (s *rssSampler) stop() (int64, error) {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	if s.err != nil {
		return s.peak, fmt.Errorf("sampling RSS: %w", s.err)
	}
	return s.peak, nil
}
