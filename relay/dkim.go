package relay

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
)

// dkimPolicy is the signing half of the relay's DKIM policy ([dkim] in
// the config); verification is relay/auth.go's, with the other checks.
// Mail this relay originates, i.e. from an authenticated client or one
// in relay_networks and not handed over by another of our relays, is
// signed with the [[dkim.sign]] keys of its From domain. The signature is
// stored with the message, so every retry and every later hop sends the
// same bytes; trace fields added on the way (Received,
// Authentication-Results, our X-Relay-Handoff line) are not signed and do
// not break it.
//
// Keys are loaded once, by newDKIMPolicy at relay start.
type dkimPolicy struct {
	signers map[string]*dkim.Signer // by From domain, lower case
}

// newDKIMPolicy loads the signing keys of cfg; an unreadable or unusable
// key file is an error naming it, so that the relay does not start and
// send unsigned mail.
func newDKIMPolicy(cfg *config.Config, log *slog.Logger) (*dkimPolicy, error) {
	p := &dkimPolicy{signers: map[string]*dkim.Signer{}}
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
	return p, nil
}

// DKIMSigner returns the signer for mail whose From domain is domain, or
// nil when [[dkim.sign]] has no key for it. Delivery status notifications
// the relay writes itself are to be signed with the signer of its
// hostname's domain.
func (r *Relay) DKIMSigner(domain string) *dkim.Signer {
	return r.dkim.signers[strings.TrimSuffix(strings.ToLower(domain), ".")]
}

// signature signs a message the relay originates (given as for
// authPolicy.judge): it returns the DKIM-Signature fields to put in
// front of it, nil when there is no key for its From domain, or the
// error to answer.
func (p *dkimPolicy) signature(id string, header []byte, body func() (io.Reader, error), log *slog.Logger) ([]byte, error) {
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
	}
	return sigs, nil
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
