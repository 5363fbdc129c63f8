package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/deliver"
)

// dkimTimeout bounds the key lookups of one message's verification; the
// client is waiting for its reply to DATA meanwhile. A lookup cut short is
// temperror, never fail. OpenDKIM waits 10s too.
const dkimTimeout = 10 * time.Second

// dkimPolicy is the relay's DKIM policy ([dkim] in the config), applied
// at the end of DATA, before the message is stored:
//
//   - Verify (verify = true): every signature of a signed message is
//     checked and the verdicts go into an Authentication-Results field
//     naming this relay's hostname; unsigned mail gets no field (every
//     hop would add "dkim=none" otherwise). Authentication-Results fields
//     that already claim our hostname are forgeries and are removed
//     (RFC 8601 §5). A dkim=fail for a domain of reject_failures, with no
//     passing signature of that domain, is refused with 550 5.7.20
//     (RFC 7372).
//   - Sign: mail this relay originates, i.e. from an authenticated client
//     or one in relay_networks and not handed over by another of our
//     relays, is signed with the [[dkim.sign]] keys of its From domain.
//     The signature is stored with the message, so every retry and every
//     later hop sends the same bytes; trace fields added on the way
//     (Received, Authentication-Results, our X-Relay-Handoff line) are
//     not signed and do not break it.
//
// Keys are loaded once, by newDKIMPolicy at relay start.
type dkimPolicy struct {
	hostname string
	signers  map[string]*dkim.Signer // by From domain, lower case
	verifier *dkim.Verifier          // nil: verify = false
	reject   []string                // reject_failures
	arc      *arcPolicy              // relay/arc.go
}

// newDKIMPolicy loads the signing keys of cfg; an unreadable or unusable
// key file is an error naming it, so that the relay does not start and
// send unsigned mail. Keys are looked up in [dkim.keys], then through
// resolver when it has a LookupTXT method (as *net.Resolver has), else
// through the system resolver.
func newDKIMPolicy(cfg *config.Config, resolver deliver.Resolver, log *slog.Logger) (*dkimPolicy, error) {
	p := &dkimPolicy{hostname: cfg.Hostname, signers: map[string]*dkim.Signer{}, reject: cfg.DKIM.RejectFailures}
	for i, s := range cfg.DKIM.Sign {
		key, err := dkim.LoadKey(s.Key)
		if err != nil {
			return nil, cfg.KeyError(fmt.Sprintf("dkim.sign[%d].key", i), fmt.Errorf("domain %s selector %s: %w", s.Domain, s.Selector, err))
		}
		if fi, err := os.Stat(s.Key); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("dkim: private key file is readable by others", "file", s.Key, "mode", fi.Mode().Perm().String())
		}
		// A [dkim.keys] entry for our own key that does not match it would
		// make every relay that uses the table fail our signatures.
		name := dkim.RecordName(s.Selector, s.Domain)
		if rec, ok := cfg.DKIM.Keys[name]; ok && !dkim.MatchesRecord(rec, key.Public()) {
			log.Warn("dkim: [dkim.keys] record does not match the signing key", "name", name, "file", s.Key)
		}
		sg := p.signers[s.Domain]
		if sg == nil {
			sg = &dkim.Signer{Domain: s.Domain}
			p.signers[s.Domain] = sg
		}
		sg.Keys = append(sg.Keys, dkim.Key{Selector: s.Selector, Signer: key})
	}
	if cfg.DKIM.Verify {
		p.verifier = &dkim.Verifier{Keys: cfg.DKIM.Keys}
		if tr, ok := resolver.(dkim.TXTResolver); ok {
			p.verifier.Resolver = tr
		}
	}
	var err error
	if p.arc, err = newARCPolicy(cfg, resolver, log); err != nil {
		return nil, err
	}
	return p, nil
}

// DKIMSigner returns the signer for mail whose From domain is domain, or
// nil when [[dkim.sign]] has no key for it. Delivery status notifications
// the relay writes itself are to be signed with the signer of its
// hostname's domain.
func (r *Relay) DKIMSigner(domain string) *dkim.Signer {
	return r.dkim.signers[strings.TrimSuffix(strings.ToLower(domain), ".")]
}

// check applies the policy to a message as the client sent it (our
// hand-off line removed, our Received field not yet added), given as its
// header section and the rest, which body returns a new reader of each
// time. It returns the header to store: the fields the policy adds, then
// the client's header section as kept; or the SMTP error to answer.
// originate says the relay is the message's entry point and may sign it;
// mail it does not originate is ARC-sealed instead (relay/arc.go), and
// the ARC verdict joins the DKIM ones in our Authentication-Results.
// id and log only name the message in log lines.
func (p *dkimPolicy) check(id string, header []byte, body func() (io.Reader, error), originate bool, log *slog.Logger) ([]byte, error) {
	var head []byte       // fields to put in front of the message
	var verdicts []string // this relay's results, for Authentication-Results
	if p.verifier != nil {
		// The body is read only for a signed message.
		read, bodyErr := trackBody(body)
		ctx, cancel := context.WithTimeout(context.Background(), dkimTimeout)
		results, err := p.verifier.VerifyParts(ctx, header, read)
		cancel()
		if *bodyErr != nil {
			return nil, *bodyErr
		}
		if err != nil {
			log.Warn("dkim: cannot verify", "id", id, "err", err)
		}
		if len(results) > 0 {
			for _, r := range results {
				verdicts = append(verdicts, r.String())
			}
			log.Info("dkim: verified", "id", id, "results", strings.Join(verdicts, "; "))
			if d := p.refused(results); d != "" {
				return nil, smtpError(550, 5, 7, 20, "No passing DKIM signature found for "+d)
			}
		}
	}
	// ARC (relay/arc.go): check the chain; seal what passes through.
	arc, set, err := p.arc.check(id, header, body, !originate, verdicts, log)
	if err != nil {
		return nil, err
	}
	if arc != "" {
		verdicts = append(verdicts, arc)
	}
	if p.verifier != nil || p.arc.verifier != nil {
		// Verified first: a signature may cover the very fields removed.
		var forged int
		if header, forged = dkim.RemoveAuthResults(header, p.hostname); forged > 0 {
			log.Info("dkim: removed Authentication-Results claiming to be ours", "id", id, "fields", forged)
		}
	}
	if len(verdicts) > 0 {
		head = append(head, dkim.AuthResultsField(p.hostname, verdicts)...)
	}
	head = append(head, set...)
	if originate {
		sigs, signer, err := p.sign(header, body)
		if err != nil {
			// As Postfix does when its signing milter fails: the client
			// tries again, and no mail the domain expects signed leaves
			// unsigned.
			log.Error("dkim: cannot sign", "id", id, "err", err)
			return nil, smtpError(451, 4, 3, 0, "Cannot sign the message, try again later")
		}
		if sigs != nil {
			selectors := make([]string, len(signer.Keys))
			for i, k := range signer.Keys {
				selectors[i] = k.Selector
			}
			log.Info("dkim: signed", "id", id, "domain", signer.Domain, "selectors", strings.Join(selectors, ","))
			head = append(head, sigs...)
		}
	}
	return append(head, header...), nil
}

// refused returns the first reject_failures domain with a failed and no
// passing signature among results, or "".
func (p *dkimPolicy) refused(results []dkim.Result) string {
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

// sign returns the DKIM-Signature fields for msg and the signer that made
// them, or nil when its From domain has no key or it already carries a
// signature of that domain (signed once, even when it comes back to us
// through another MTA).
func (p *dkimPolicy) sign(header []byte, body func() (io.Reader, error)) ([]byte, *dkim.Signer, error) {
	if len(p.signers) == 0 {
		return nil, nil, nil
	}
	domain, err := dkim.FromDomain(header)
	if err != nil {
		return nil, nil, nil // no single author domain: nothing we may sign for
	}
	s := p.signers[domain]
	if s == nil || dkim.SignedBy(header, domain) {
		return nil, nil, nil
	}
	sigs, err := s.SignaturesParts(header, body)
	return sigs, s, err
}
