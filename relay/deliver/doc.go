// Package deliver is the sending side of the relay: it implements
// queue.Deliverer by opening SMTP sessions to next hops and carrying mail
// transactions over them.
//
// One file per concern:
//   - deliver.go: the Deliverer and Dial, which tries a hop's addresses in
//     order until one gives a session;
//   - targets.go: the addresses of a hop (route addresses, MX then A/AAAA),
//     NXDOMAIN (5.1.2) and null MX (5.1.10);
//   - policy.go: the TLS policy of each MX host: DANE, else MTA-STS, else
//     none, and the outcomes reported for TLS-RPT and metrics;
//   - tls.go: the opening exchange (greeting, EHLO, STARTTLS) and the TLS
//     policy of a hop applied to it;
//   - session.go: an open session and its mail transactions;
//   - transaction.go: replies read off the wire, pipelined round trips and
//     the message written as DATA;
//   - params.go, levels.go: the MAIL and RCPT parameters a hop gets, and
//     the levels of service (MT-PRIORITY, BY, REQUIRETLS) passed on;
//   - handoff.go: the field that makes hand-off between our relays
//     idempotent.
package deliver
