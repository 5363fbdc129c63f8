package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// A target is an SMTP server under test. Start gives a fresh, listening
// instance for one configuration, forwarding mail for sink.test to the
// sink, with every process it starts in g.
type target interface {
	Name() string
	Start(ctx context.Context, sk *sink, g *group) (instance, error)
}

type instance interface {
	Addr() string // where smtp-source and the probe connect
	// Died is closed if the instance exits by itself (nil: not watched).
	Died() <-chan struct{}
	// Stop stops the instance as an operator would; the bench then kills
	// whatever of its group is left.
	Stop() error
}

// perRecipient is implemented by targets that deliver each recipient of a
// message in an SMTP transaction of its own (chasquid): the sink then
// counts rcpts messages for each one accepted.
type perRecipient interface {
	perRecipient()
}

// versioned is implemented by targets that know which version they run.
type versioned interface {
	Version() string
}

// directTarget is no relay at all: smtp-source straight into smtp-sink,
// the ceiling of the protocol and loopback on this machine. Its CPU and
// memory are smtp-sink's.
type directTarget struct{}

func (directTarget) Name() string { return "direct" }

func (directTarget) Start(_ context.Context, sk *sink, _ *group) (instance, error) {
	return directInstance{sk}, nil
}

type directInstance struct{ sk *sink }

func (d directInstance) Addr() string { return d.sk.addr }

func (d directInstance) Died() <-chan struct{} { return nil }

func (d directInstance) Stop() error { return nil }

// daemon is a server process run in the foreground as a target's
// instance, its output going to a log file.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	log     string
	exited  chan struct{}
	waitErr error // set before exited is closed
	// stopStatus is the exit status with which it answers SIGTERM, when
	// not death by the signal (chasquid: 1).
	stopStatus int
}

// startDaemon starts cmd in g, logging to logPath, and waits until it
// listens on addr.
func startDaemon(ctx context.Context, name string, g *group, cmd *exec.Cmd, addr, logPath string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	d := &daemon{name: name, cmd: cmd, addr: addr, log: logPath, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := g.start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	if err := waitListening(ctx, addr, time.Minute, d.exited); err != nil {
		err = fmt.Errorf("%s: %w; log %s: %s", name, err, logPath, fileTail(logPath))
		d.Stop()
		return nil, err
	}
	return d, nil
}

func (d *daemon) Addr() string { return d.addr }

func (d *daemon) Died() <-chan struct{} { return d.exited }

// Stop sends the daemon SIGTERM, as its operators do, and waits for it;
// an exit other than success, death by SIGTERM or stopStatus is an error.
func (d *daemon) Stop() error {
	select {
	case <-d.exited:
		if d.waitErr == nil {
			return fmt.Errorf("%s exited by itself; log %s: %s", d.name, d.log, fileTail(d.log))
		}
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(time.Minute):
			_ = d.cmd.Process.Kill()
			<-d.exited
			return fmt.Errorf("%s did not exit within a minute of SIGTERM; killed", d.name)
		}
	}
	var ee *exec.ExitError
	if errors.As(d.waitErr, &ee) {
		ws, ok := ee.Sys().(syscall.WaitStatus)
		if ok && (ws.Signaled() && ws.Signal() == syscall.SIGTERM || d.stopStatus != 0 && ws.ExitStatus() == d.stopStatus) {
			return nil
		}
	}
	if d.waitErr != nil {
		return fmt.Errorf("%s: %w; log %s: %s", d.name, d.waitErr, d.log, fileTail(d.log))
	}
	return nil
}

// fileTail is the end of a log file, on one line.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	t := &tailBuffer{}
	t.Write(b)
	return t.String()
}
