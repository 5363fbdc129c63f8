// Package integration holds tests that run whole relays: in-process and
// as subprocesses of the real binary, on their own loopback addresses
// (127.0.0.2, 127.0.0.3, …), with real clients. Production code never
// imports it.
package integration
