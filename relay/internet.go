package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/deliver"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/resolve"
	"github.com/relay-mta/relay/relay/tlsrpt"
	"github.com/relay-mta/relay/spool"
)

// Delivering to the Internet: the resolver every lookup goes through
// ([dns]), the CAs next hops are verified with ([tls] ca_file), and the
// TLS policies of MX deliveries: MTA-STS ([mta_sts]), DANE ([dane]) and
// TLS reporting ([tls_rpt]).

// newResolver is opts' resolver (tests), else one on [dns] servers.
func newResolver(cfg *config.Config, given deliver.Resolver) (deliver.Resolver, error) {
	if given != nil {
		return given, nil
	}
	r, err := resolve.New(resolve.Options{Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout, Attempts: cfg.DNS.Attempts})
	if err != nil {
		return nil, fmt.Errorf("[dns]: %w", err)
	}
	return r, nil
}

// rootCAs is opts' pool (tests), else the system's plus [tls] ca_file.
func rootCAs(cfg *config.Config, given *x509.CertPool) (*x509.CertPool, error) {
	if given != nil || cfg.TLS.CAFile == "" {
		return given, nil // nil: crypto/tls uses the system's
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(cfg.TLS.CAFile)
	if err != nil {
		return nil, cfg.KeyError("tls.ca_file", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, cfg.KeyError("tls.ca_file", fmt.Errorf("%s holds no PEM certificate", cfg.TLS.CAFile))
	}
	return pool, nil
}

// applyTLSPolicies sets the MTA-STS, DANE and reporting parts of d.
func (r *Relay) applyTLSPolicies(d *deliver.Deliverer) {
	if res, ok := d.Resolver.(mtasts.Resolver); ok && r.cfg.MTASTS.Enabled {
		d.STS = &mtasts.Source{Resolver: res, Cache: r.spool, RootCAs: d.RootCAs, Port: r.cfg.MTASTS.Port, Now: r.now, Logger: r.log,
			FetchFailed: func(domain string, err error) {
				failure := tlsrpt.STSPolicyFetchError
				if errors.Is(err, mtasts.ErrInvalid) {
					failure = tlsrpt.STSPolicyInvalid
				}
				d.Report(tlsrpt.Result{PolicyDomain: domain, PolicyType: tlsrpt.PolicySTS, Failure: failure, Detail: err.Error()})
			}}
	}
	d.DANE = r.cfg.DANE.Enabled
	if r.cfg.TLSRPT.Enabled {
		r.tlsReports = tlsrpt.NewRecorder(r.now())
	}
	d.Report = func(res tlsrpt.Result) {
		result := res.Failure
		if result == "" {
			result = "success"
		}
		r.ops.metrics.TLSPolicy(string(res.PolicyType), result)
		if r.tlsReports != nil {
			r.tlsReports.Record(res)
		}
	}
}

// sendTLSReports mails a TLS report (RFC 8460) every [tls_rpt] interval
// to each policy domain counted in it that publishes a mailto: rua.
func (r *Relay) sendTLSReports(ctx context.Context, lookup func(ctx context.Context, name string) ([]string, error)) {
	if r.tlsReports == nil || lookup == nil {
		return
	}
	t := time.NewTicker(r.cfg.TLSRPT.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		period := r.tlsReports.Take(r.now())
		for _, dom := range period.Domains() {
			if err := r.sendTLSReport(ctx, lookup, period, dom); err != nil {
				r.log.Info("tls-rpt: no report sent", "domain", dom, "err", err)
			}
		}
	}
}

func (r *Relay) sendTLSReport(ctx context.Context, lookup func(ctx context.Context, name string) ([]string, error), period *tlsrpt.Period, dom string) error {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	txt, err := lookup(lctx, "_smtp._tls."+dom)
	cancel()
	if err != nil {
		return err
	}
	ruas, err := tlsrpt.ParseRUA(txt)
	if err != nil {
		return err
	}
	from := r.cfg.TLSRPT.From
	if from == "" {
		from = "postmaster@" + r.cfg.Hostname
	}
	rep := period.Build(dom, r.cfg.Hostname, "mailto:"+from)
	sign := r.dsnSigner()
	for _, to := range ruas {
		msg, err := tlsrpt.Message(rep, dom, r.cfg.Hostname, from, to, r.now())
		if err != nil {
			return err
		}
		if sign != nil {
			if msg, err = sign(msg); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
		}
		if strings.ContainsAny(to, "<>\r\n ") {
			continue
		}
		id, err := r.spool.Enqueue(ctx, spool.Envelope{From: "<" + from + ">", Helo: r.cfg.Hostname, Client: "127.0.0.1"},
			[]spool.Recipient{{To: "<" + to + ">"}}, msg)
		if err != nil {
			return err
		}
		r.log.Info("tls-rpt: report queued", "domain", dom, "to", to, "id", id, "policies", len(rep.Policies))
	}
	r.queue.Notify()
	return nil
}

// RootCAs is the pool next hops and MTA-STS policy hosts are verified
// with: the system's plus [tls] ca_file; nil means the system's alone.
func RootCAs(cfg *config.Config) (*x509.CertPool, error) { return rootCAs(cfg, nil) }
