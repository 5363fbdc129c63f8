package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/mailauth"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/deliver"
	"github.com/relay-mta/relay/relay/resolve"
)

// dkimTimeout bounds the key lookups of one message's verification; the
// client is waiting for its reply to DATA meanwhile. A lookup cut short is
// temperror, never fail. OpenDKIM waits 10s too.
const dkimTimeout = 10 * time.Second

// spfTimeout bounds one SPF check at MAIL FROM, and dmarcTimeout the
// DMARC record lookups of one message: RFC 7208 §4.6.4 asks for at
// least 20 seconds for SPF's up to 10 lookups; DMARC makes two at most.
const (
	spfTimeout   = 20 * time.Second
	dmarcTimeout = 10 * time.Second
)

// authPolicy is how the relay judges where incoming mail comes from
// ([dkim] verify, [arc], [auth]; docs/design.md §16), in one place so
// that one Authentication-Results field carries every verdict:
//
//   - SPF (spf = true) at MAIL FROM, for the MAIL FROM domain or the
//     HELO name when MAIL FROM is <> ([authPolicy.spf]); a fail is
//     refused with 550 5.7.23 when spf_reject_fail is set; temperror
//     and permerror are recorded and the mail goes on.
//   - At the end of DATA ([authPolicy.judge]): DKIM signatures verified
//     (a dkim=fail of a reject_failures domain refused, 550 5.7.20),
//     then DMARC (dmarc = true) judged on those and on SPF: a failure
//     whose policy is reject is refused with 550 5.7.1 when
//     dmarc_reject is set, and otherwise marked as one whose policy is
//     quarantine is, with an X-Relay-DMARC field; then the ARC chain
//     checked and, for mail that passes through, sealed with the same
//     verdicts in its ARC-Authentication-Results (relay/arc.go); then
//     Authentication-Results fields that claim our hostname removed as
//     forgeries (RFC 8601 §5).
//
// SPF and DMARC are not applied to clients the relay trusts (in
// relay_networks, or authenticated) unless check_relay_networks is set:
// their mail is ours to sign, not to judge.
type authPolicy struct {
	hostname string
	cfg      config.Auth
	resolver mailauth.Resolver // SPF and DMARC lookups
	verifier *dkim.Verifier    // nil: dkim.verify = false
	reject   []string          // dkim.reject_failures
	arc      *arcPolicy        // relay/arc.go
}

// newAuthPolicy prepares the checks of cfg. SPF and DMARC look records
// up through resolver when it can answer every SPF lookup (the relay's
// own does), else through a resolver on [dns] servers; DKIM and ARC keys
// as newARCPolicy says.
func newAuthPolicy(cfg *config.Config, resolver deliver.Resolver, log *slog.Logger) (*authPolicy, error) {
	p := &authPolicy{hostname: cfg.Hostname, cfg: cfg.Auth, reject: cfg.DKIM.RejectFailures}
	if cfg.DKIM.Verify {
		p.verifier = &dkim.Verifier{Keys: cfg.DKIM.Keys}
		if tr, ok := resolver.(dkim.TXTResolver); ok {
			p.verifier.Resolver = tr
		}
	}
	if cfg.Auth.SPF || cfg.Auth.DMARC {
		if mr, ok := resolver.(mailauth.Resolver); ok {
			p.resolver = mr
		} else {
			r, err := resolve.New(resolve.Options{Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout, Attempts: cfg.DNS.Attempts})
			if err != nil {
				return nil, fmt.Errorf("relay: [dns]: %w", err)
			}
			p.resolver = r
		}
	}
	var err error
	if p.arc, err = newARCPolicy(cfg, resolver, log); err != nil {
		return nil, err
	}
	return p, nil
}

// checks reports whether SPF and DMARC apply to a client: not to one
// the relay trusts, unless check_relay_networks says so.
func (p *authPolicy) checks(trusted bool) bool {
	return !trusted || p.cfg.CheckRelayNetworks
}

// spf checks SPF for MAIL FROM from a client at ip that said HELO helo.
// It returns the verdict to record (nil when SPF is off), and the
// refusal to answer when the relay refuses it.
func (p *authPolicy) spf(ip netip.Addr, helo string, from envelope.Path, log *slog.Logger) (*mailauth.SPFResult, error) {
	if !p.cfg.SPF {
		return nil, nil
	}
	sender := ""
	if !from.IsNull() && from.Domain != "" {
		sender = from.Local + "@" + from.Domain
	}
	ctx, cancel := context.WithTimeout(context.Background(), spfTimeout)
	res := mailauth.CheckSPF(ctx, p.resolver, net.IP(ip.Unmap().AsSlice()), helo, sender)
	cancel()
	log.Info("spf: checked", "from", from.String(), "helo", helo, "result", res.String())
	if res.Status == mailauth.Fail && p.cfg.SPFRejectFail {
		return &res, smtpError(550, 5, 7, 23, fmt.Sprintf("SPF check failed: %s is not allowed to send mail for %s", ip, res.Domain))
	}
	return &res, nil
}

// judgeInput is what judge needs besides the message.
type judgeInput struct {
	id string // names the message in log lines
	// header and body are the message as the client sent it (our
	// hand-off line removed, our Received field not yet added); body
	// returns a new reader of the rest each time.
	header []byte
	body   func() (io.Reader, error)
	// seal says the mail passes through (not originated here): it gets
	// an ARC set when the relay has a key.
	seal bool
	// dmarc says DMARC applies to this client; spf is its SPF verdict at
	// MAIL FROM (nil: not checked).
	dmarc bool
	spf   *mailauth.SPFResult
}

// judge applies the policy to a message. It returns the verdicts, the
// fields to put in front of it (Authentication-Results, X-Relay-DMARC,
// the ARC set) and the client's header section as kept (forged
// Authentication-Results removed), or the SMTP error to answer (with the
// verdicts reached so far).
func (p *authPolicy) judge(in judgeInput, log *slog.Logger) (res mailauth.Results, head, header []byte, err error) {
	res, err = p.results(in, log)
	if err != nil {
		return res, nil, nil, err
	}
	var mark string
	if d := res.DMARC; d != nil && d.Status == mailauth.Fail {
		switch {
		case d.Disposition == dmarc.PolicyReject && p.cfg.DMARCReject:
			return res, nil, nil, smtpError(550, 5, 7, 1, "Message rejected by the DMARC policy of "+d.From)
		case d.Disposition == dmarc.PolicyReject || d.Disposition == dmarc.PolicyQuarantine:
			// RFC 7489 §6.7: a receiver may quarantine what the
			// domain asks to reject; here, when dmarc_reject is off.
			mark = "X-Relay-DMARC: quarantine (" + d.String() + ") by " + p.hostname + "\r\n"
			log.Info("dmarc: marked for quarantine", "id", in.id, "from", d.From, "policy", d.Policy)
		}
	}
	// ARC (relay/arc.go): check the chain; seal what passes through, with
	// the verdicts so far in its ARC-Authentication-Results.
	arc, set, err := p.arc.check(in.id, in.header, in.body, in.seal, res.Resinfo(), log)
	if err != nil {
		return res, nil, nil, err
	}
	res.ARC = arc
	header = in.header
	if p.verifier != nil || p.arc.verifier != nil || p.cfg.SPF || p.cfg.DMARC {
		// Verified first: a signature may cover the very fields removed.
		var forged int
		if header, forged = dkim.RemoveAuthResults(header, p.hostname); forged > 0 {
			log.Info("auth: removed Authentication-Results claiming to be ours", "id", in.id, "fields", forged)
		}
	}
	head = append(head, res.Field(p.hostname)...)
	head = append(head, mark...)
	head = append(head, set...)
	return res, head, header, nil
}

// results verifies the DKIM signatures of a message and judges its
// DMARC policy; the ARC verdict is judge's to add.
func (p *authPolicy) results(in judgeInput, log *slog.Logger) (mailauth.Results, error) {
	res := mailauth.Results{SPF: in.spf}
	if p.verifier != nil {
		// The body is read only for a signed message.
		read, bodyErr := trackBody(in.body)
		ctx, cancel := context.WithTimeout(context.Background(), dkimTimeout)
		results, err := p.verifier.VerifyParts(ctx, in.header, read)
		cancel()
		if *bodyErr != nil {
			return res, *bodyErr
		}
		if err != nil {
			log.Warn("dkim: cannot verify", "id", in.id, "err", err)
		}
		if len(results) > 0 {
			res.DKIM = results
			log.Info("dkim: verified", "id", in.id, "results", strings.Join(mailauth.Results{DKIM: results}.Resinfo(), "; "))
			if d := p.refused(results); d != "" {
				return res, smtpError(550, 5, 7, 20, "No passing DKIM signature found for "+d)
			}
		}
	}
	if p.cfg.DMARC && in.dmarc && in.spf != nil {
		from, err := dkim.FromDomain(in.header)
		if err != nil {
			// No single author domain: DMARC has nothing to judge
			// (RFC 7489 §6.6.1 leaves such mail to local policy).
			log.Info("dmarc: not judged", "id", in.id, "reason", err)
			return res, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), dmarcTimeout)
		d := mailauth.CheckDMARC(ctx, p.resolver, mailauth.DMARCInput{From: from, DKIM: mailauth.PassingDomains(res.DKIM), SPF: *in.spf})
		cancel()
		res.DMARC = &d
		log.Info("dmarc: judged", "id", in.id, "result", d.String())
	}
	return res, nil
}

// refused returns the first reject_failures domain with a failed and no
// passing signature among results, or "".
func (p *authPolicy) refused(results []dkim.Result) string {
	for _, d := range p.reject {
		failed, passed := false, false
		for _, r := range results {
			if strings.EqualFold(strings.TrimSuffix(r.Domain, "."), d) {
				failed = failed || r.Status == dkim.Fail
				passed = passed || r.Status == dkim.Pass
			}
		}
		if failed && !passed {
			return d
		}
	}
	return ""
}
