package main

import "context"

// A target is an SMTP server under test. Start gives a fresh, listening
// instance for one configuration, forwarding mail for sink.test to the
// sink.
type target interface {
	Name() string
	Start(ctx context.Context, sk *sink) (instance, error)
}

type instance interface {
	Addr() string // where smtp-source and the probe connect
	// Died is closed if the instance exits by itself (nil: not watched).
	Died() <-chan struct{}
	// PeakRSS is the peak memory of the instance so far, in KiB (0:
	// not measured); called after the run, before Stop.
	PeakRSS() (int64, error)
	Stop() error
}

// directTarget is no relay at all: smtp-source straight into smtp-sink,
// the ceiling of the protocol and loopback on this machine.
type directTarget struct{}

func (directTarget) Name() string { return "direct" }

func (directTarget) Start(_ context.Context, sk *sink) (instance, error) {
	return directInstance{sk}, nil
}

type directInstance struct{ sk *sink }

func (d directInstance) Addr() string { return d.sk.addr }

// PeakRSS is smtp-sink's own.
func (d directInstance) PeakRSS() (int64, error) { return vmHWM(d.sk.cmd.Process.Pid) }

func (d directInstance) Died() <-chan struct{} { return nil }

func (d directInstance) Stop() error { return nil }
