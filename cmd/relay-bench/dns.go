package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// dnsServer answers queries from a fixed table of records: the few names
// chasquid looks up (the MX of the domain its aliases forward to, the
// address of that MX host). Any other name is NXDOMAIN at once, so SPF
// and MTA-STS lookups end quickly and nothing is asked of the Internet.
// chasquid resolves with Go's resolver, which reads /etc/resolv.conf and
// asks port 53: so this listens on port 53 of an address of the run, and
// chasquid's namespace gets a resolv.conf naming it. (relay/resolve/dnstest
// starts unbound on a free port, for tests.)
type dnsServer struct {
	servers []*dns.Server
}

func startDNS(addr string, records []string) (*dnsServer, error) {
	table := map[string][]dns.RR{} // by lower-case name
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			return nil, fmt.Errorf("dns: record %q: %w", r, err)
		}
		name := strings.ToLower(rr.Header().Name)
		table[name] = append(table[name], rr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		for _, q := range req.Question {
			rrs, ok := table[strings.ToLower(q.Name)]
			if !ok {
				m.Rcode = dns.RcodeNameError
				continue
			}
			for _, rr := range rrs {
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		_ = w.WriteMsg(m)
	})
	s := &dnsServer{}
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: addr, Net: network, Handler: h}
		started := make(chan error, 1)
		srv.NotifyStartedFunc = func() { started <- nil }
		go func() {
			if err := srv.ListenAndServe(); err != nil {
				started <- err
			}
		}()
		if err := <-started; err != nil {
			s.close()
			return nil, fmt.Errorf("dns: listen on %s/%s: %w", addr, network, err)
		}
		s.servers = append(s.servers, srv)
	}
	return s, nil
}

func (s *dnsServer) close() {
	for _, srv := range s.servers {
		_ = srv.Shutdown()
	}
}

// dnsAddr is addr's host at port 53: where resolv.conf makes resolvers ask.
func dnsAddr(ip string) string { return net.JoinHostPort(ip, "53") }
