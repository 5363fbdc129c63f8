package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/deliver"
)

// arcPolicy is the relay's ARC policy ([arc] in the config, RFC 8617),
// applied at the end of DATA by authPolicy.judge (relay/auth.go):
//
//   - Verify: the chain of a message that has one is validated and the
//     verdict (arc=pass, fail or temperror) joins the relay's
//     Authentication-Results field. Mail without ARC fields gets no
//     arc=none there, unless the relay seals it.
//   - Seal ([[arc.sign]]): mail that did not originate here (from other
//     hosts, and from our own relays with a hand-off token: every hop is
//     an intermediary of its own) gets a new ARC set. Its
//     ARC-Authentication-Results carries the relay's verdicts, the same
//     as its Authentication-Results field, so that a later hop or the
//     final receiver can see what this one saw even after a change the
//     message undergoes breaks the original DKIM signatures. A chain
//     this relay finds broken is sealed with cv=fail; one already sealed
//     so, or 50 sets long, is left as it is. A chain that cannot be
//     checked now (a key lookup failed) is not sealed with a wrong
//     verdict: the client is told to try again later (451 4.4.3).
//
// Mail the relay originates is DKIM-signed, not sealed: there is no
// earlier authentication to carry on.
type arcPolicy struct {
	hostname string
	record   bool           // verify = true: verdicts on mail not sealed too
	verifier *dkim.Verifier // nil: verify = false and no seal
	sealer   *dkim.Sealer   // nil: no [[arc.sign]]
}

// newARCPolicy loads the sealing key of cfg; an unreadable or unusable
// key file (not RSA, which ARC verifiers require) is an error naming it.
// Keys of chains are looked up as DKIM keys are: [dkim.keys], then
// resolver when it can look up TXT records, else the system resolver.
func newARCPolicy(cfg *config.Config, resolver deliver.Resolver, log *slog.Logger) (*arcPolicy, error) {
	p := &arcPolicy{hostname: cfg.Hostname, record: cfg.ARC.Verify}
	for i, s := range cfg.ARC.Sign {
		key, err := dkim.LoadKey(s.Key)
		if err == nil {
			if alg, _ := dkim.KeyAlgorithm(key); alg != dkim.RSA {
				err = fmt.Errorf("dkim: key file %s: %s key; ARC seals need an rsa key", s.Key, alg)
			}
		}
		if err != nil {
			return nil, cfg.KeyError(fmt.Sprintf("arc.sign[%d].key", i), fmt.Errorf("domain %s selector %s: %w", s.Domain, s.Selector, err))
		}
		if fi, err := os.Stat(s.Key); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("arc: private key file is readable by others", "file", s.Key, "mode", fi.Mode().Perm().String())
		}
		p.sealer = &dkim.Sealer{Domain: s.Domain, Key: dkim.Key{Selector: s.Selector, Signer: key}}
	}
	if cfg.ARC.Verify || p.sealer != nil {
		p.verifier = &dkim.Verifier{Keys: cfg.DKIM.Keys}
		if tr, ok := resolver.(dkim.TXTResolver); ok {
			p.verifier.Resolver = tr
		}
	}
	return p, nil
}

// check validates the ARC chain of a message given as for
// authPolicy.judge and, when seal is set and the relay has a key, seals
// it. results are the relay's other verdicts on the message (RFC 8601
// resinfo, "dkim=pass …"). It returns the ARC verdict to add to them (""
// when there is nothing to record) and the ARC set to put in front of
// the message (nil for none), or the error to answer.
func (p *arcPolicy) check(id string, header []byte, body func() (io.Reader, error), seal bool, results []string, log *slog.Logger) (string, []byte, error) {
	seal = seal && p.sealer != nil
	if p.verifier == nil || !seal && !p.record {
		return "", nil, nil
	}
	read, bodyErr := trackBody(body)
	ctx, cancel := context.WithTimeout(context.Background(), dkimTimeout)
	chain, err := p.verifier.VerifyARC(ctx, header, read)
	cancel()
	if *bodyErr != nil {
		return "", nil, *bodyErr
	}
	if err != nil {
		return "", nil, err
	}
	if chain.Status != dkim.None {
		log.Info("arc: verified", "id", id, "result", chain.String())
	}
	if !seal {
		if chain.Status == dkim.None {
			return "", nil, nil
		}
		return chain.String(), nil, nil
	}
	if chain.Status == dkim.TempError {
		log.Warn("arc: cannot verify the chain now, message deferred", "id", id, "reason", chain.Reason)
		return "", nil, smtpError(451, 4, 4, 3, "Cannot verify the ARC chain now, try again later")
	}
	verdicts := append(results[:len(results):len(results)], chain.String())
	set, err := p.sealer.SealParts(header, read, chain, p.hostname, verdicts)
	if *bodyErr != nil {
		return "", nil, *bodyErr
	}
	if err != nil {
		// As for a DKIM signature: no message leaves without the seal
		// the operator configured.
		log.Error("arc: cannot seal", "id", id, "err", err)
		return "", nil, smtpError(451, 4, 3, 0, "Cannot seal the message, try again later")
	}
	if set == nil {
		log.Info("arc: chain closed, not sealed", "id", id, "result", chain.String())
	} else {
		log.Info("arc: sealed", "id", id, "instance", chain.Instance+1, "domain", p.sealer.Domain, "selector", p.sealer.Key.Selector)
	}
	return chain.String(), set, nil
}

// trackBody wraps body so that the caller can tell a body that could not
// be read, the session's error, from a verification or signing failure:
// *err is the error of the last call.
func trackBody(body func() (io.Reader, error)) (read func() (io.Reader, error), err *error) {
	err = new(error)
	return func() (io.Reader, error) {
		r, e := body()
		*err = e
		return r, e
	}, err
}
