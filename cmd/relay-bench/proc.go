package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A group is the set of processes of one target instance (or of the sink),
// for its CPU time and memory.
//
// As root with a cgroup2 hierarchy mounted, it is a cgroup of its own into
// which the target's first process is born (clone3 CLONE_INTO_CGROUP), so
// every process the target ever starts is in it, and its CPU time counts
// processes that have exited, whoever reaped them (Exim's delivery
// processes, Postfix's smtpd). Otherwise it is the process trees of the
// roots the target names, and an exited process's CPU time counts only once
// a process of the tree has reaped it.
type group struct {
	dir string // cgroup directory; "" without cgroups

	mu    sync.Mutex
	roots []int
}

// cgroupBase is the directory under which relay-bench makes its cgroups:
// the cgroup2 mount, if this process may make a cgroup there; "" otherwise.
func cgroupBase() string {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(mi), "\n") {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || g[0] != "cgroup2" {
			continue
		}
		probe := filepath.Join(f[4], fmt.Sprintf("relay-bench-probe-%d", os.Getpid()))
		if os.Mkdir(probe, 0o755) != nil {
			return ""
		}
		os.Remove(probe)
		return f[4]
	}
	return ""
}

// newGroup makes a group; base is cgroupBase() ("" for process trees).
func newGroup(base, name string) (*group, error) {
	g := &group{}
	if base == "" {
		return g, nil
	}
	g.dir = filepath.Join(base, fmt.Sprintf("relay-bench-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return g, nil
}

// start starts cmd as a process of the group.
func (g *group) start(cmd *exec.Cmd) error {
	if g.dir != "" {
		f, err := os.Open(g.dir)
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		defer f.Close()
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(f.Fd())
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	g.addRoot(cmd.Process.Pid)
	return nil
}

// addRoot names a process whose tree belongs to the group (without
// cgroups: a daemon that its starter left to init, Postfix's master).
func (g *group) addRoot(pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roots = append(g.roots, pid)
}

// pids lists the group's live processes (zombies included).
func (g *group) pids() ([]int, error) {
	if g.dir != "" {
		b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		if err != nil {
			return nil, err
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		return out, nil
	}
	g.mu.Lock()
	roots := append([]int(nil), g.roots...)
	g.mu.Unlock()
	return descendants(roots)
}

// cpu is the user+system CPU time the group has used so far.
func (g *group) cpu() (time.Duration, error) {
	if g.dir != "" {
		b, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		return cgroupCPU(b)
	}
	pids, err := g.pids()
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		if t, err := statCPUTicks(stat); err == nil {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// close waits up to grace for the group's processes to exit by themselves
// (after the target's own stop), kills those left, and removes the cgroup.
func (g *group) close(grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		pids, err := g.pids()
		pids = slices.DeleteFunc(pids, zombie) // dead, waiting for their parent
		if err != nil || len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if time.Now().After(deadline.Add(10 * time.Second)) {
				return fmt.Errorf("processes %v still running after SIGKILL", pids)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A cgroup stays busy until its last zombie is reaped.
	for g.dir != "" {
		err := os.Remove(g.dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			return fmt.Errorf("cgroup: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// zombie reports whether pid has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	f, err := statFields(stat)
	return err == nil && f[0] == "Z"
}

// cgroupCPU reads user_usec + system_usec of a cgroup2 cpu.stat.
func cgroupCPU(stat []byte) (time.Duration, error) {
	var usec int64
	found := 0
	for _, line := range strings.Split(string(stat), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "user_usec" || f[0] == "system_usec") {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu.stat: %q: %w", line, err)
			}
			usec += v
			found++
		}
	}
	if found != 2 {
		return 0, errors.New("cpu.stat: no user_usec and system_usec")
	}
	return time.Duration(usec) * time.Microsecond, nil
}

// statFields are the fields of /proc/PID/stat after "pid (comm)", which
// may hold spaces and parentheses: state is [0], ppid [1], utime [11].
func statFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc stat: no ')' in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc stat: short %q", stat)
	}
	return f, nil
}

// statPPID is the parent PID in the contents of /proc/PID/stat.
func statPPID(stat []byte) (int, error) {
	f, err := statFields(stat)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// statCPUTicks is utime+stime+cutime+cstime in /proc/PID/stat: the
// process's CPU time and that of the children it has reaped, in clock
// ticks.
func statCPUTicks(stat []byte) (int64, error) {
	f, err := statFields(stat)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: %q: %w", s, err)
		}
		sum += v
	}
	return sum, nil
}

// descendants lists roots and all their descendants that are alive.
func descendants(roots []int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
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
	var out []int
	for todo := append([]int(nil), roots...); len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// statusKiB reads a "Key:   123 kB" field of /proc/PID/status; ok is false
// when the field is absent (kernel threads, zombies).
func statusKiB(status []byte, key string) (v int64, ok bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, found := strings.CutPrefix(sc.Text(), key+":"); found {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, false, fmt.Errorf("/proc status: bad %s line %q", key, sc.Text())
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			return v, err == nil, err
		}
	}
	return 0, false, nil
}

// memory is resident memory summed over a group's processes, in KiB.
type memory struct {
	rss  int64 // VmRSS: pages shared between processes count in each
	anon int64 // RssAnon: anonymous pages, nearly all private (heaps, stacks)
}

// memoryOf sums VmRSS and RssAnon over pids.
func memoryOf(pids []int) memory {
	var m memory
	for _, pid := range pids {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue // exited meanwhile
		}
		if v, ok, _ := statusKiB(status, "VmRSS"); ok {
			m.rss += v
		}
		if v, ok, _ := statusKiB(status, "RssAnon"); ok {
			m.anon += v
		}
	}
	return m
}

// memSampler samples a group's memory every interval and keeps the peaks
// (of each sum on its own).
type memSampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  memory
	err   error
}

func sampleMemory(g *group, interval time.Duration) *memSampler {
	s := &memSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			pids, err := g.pids()
			if err != nil {
				s.err = err
				return
			}
			m := memoryOf(pids)
			s.peak.rss = max(s.peak.rss, m.rss)
			s.peak.anon = max(s.peak.anon, m.anon)
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the peaks.
func (s *memSampler) stop() (memory, error) {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	if s.err != nil {
		return s.peak, fmt.Errorf("sampling memory: %w", s.err)
	}
	return s.peak, nil
}
