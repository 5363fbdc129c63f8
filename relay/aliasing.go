package relay

import (
	"errors"
	"strings"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/aliases"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
)

// Aliases (aliases_file, recipient_delimiter): a recipient of a local
// domain is expanded at RCPT (package aliases), and the spool stores the
// addresses it stands for, each with the ORCPT of the address the client
// gave (RFC 3461 §6.2.7), so that a DSN about a target names the address
// the sender used. The policy (who may send where) is decided on the
// address as given, before expansion.

var (
	errAliasLoop    = smtpError(554, 5, 4, 6, "Alias loop detected")
	errAliasTooMany = smtpError(451, 4, 3, 0, "Alias expands to too many addresses, try again later")
)

// aliasEnv is what an expansion needs to know of this relay.
func (r *Relay) aliasEnv() aliases.Env {
	return aliases.Env{
		IsLocal: r.cfg.IsLocalDomain,
		IsMailbox: func(user string) bool {
			return r.users != nil && r.users.Exists(user)
		},
		Delimiter: r.cfg.RecipientDelimiter,
	}
}

// expandLocal resolves local@domain of a local domain, mapping failures
// to SMTP replies: unknown is 550 5.1.1 as it always was.
func (r *Relay) expandLocal(local, domain string) ([]aliases.Target, bool, error) {
	targets, aliased, err := r.aliases.Expand(aliases.Address{Local: local, Domain: domain}, r.aliasEnv())
	switch {
	case errors.Is(err, aliases.ErrUnknown):
		return nil, false, errNoSuchUser
	case errors.Is(err, aliases.ErrLoop):
		r.log.Error("aliases: loop", "err", err)
		return nil, false, errAliasLoop
	case errors.Is(err, aliases.ErrTooMany):
		r.log.Error("aliases: expansion limit", "err", err)
		return nil, false, errAliasTooMany
	}
	return targets, aliased, err
}

// localTarget is the address of a local domain that a recipient as
// given comes down to once our own hops are done, or ok false when mail
// for it does not stay here. The domainless <postmaster> is the
// postmaster of the first local domain when an alias names postmaster.
func localTarget(cfg *config.Config, to envelope.Path) (local, domain string, ok bool) {
	if to.IsPostmaster() {
		if len(cfg.LocalDomains) == 0 {
			return "", "", false
		}
		return "postmaster", cfg.LocalDomains[0], true
	}
	p := ownHopsDone(cfg, to)
	if len(p.Route) > 0 && cfg.SourceRoutes == config.SourceRoutesStrip {
		p = p.WithoutRoute()
	}
	if len(p.Route) > 0 || !cfg.IsLocalDomain(p.Domain) || strings.ContainsAny(p.Local, "@%!") {
		return "", "", false
	}
	return p.Local, strings.ToLower(strings.TrimSuffix(p.Domain, ".")), true
}

// rcptsFor returns what the spool stores for an accepted recipient: the
// recipient itself, or the addresses its alias stands for.
func (s *session) rcptsFor(to envelope.Path, p envelope.RcptParams) ([]spool.Recipient, error) {
	same := []spool.Recipient{{To: to.String(), Params: p.String()}}
	local, domain, ok := localTarget(s.r.cfg, to)
	if !ok || to.IsPostmaster() && !s.r.aliases.IsAlias(aliases.Address{Local: local, Domain: domain}) {
		return same, nil
	}
	targets, aliased, err := s.r.expandLocal(local, domain)
	if err != nil {
		return nil, err
	}
	if !aliased {
		return same, nil
	}
	// RFC 3461 §6.2.7: the targets carry the ORCPT of the address as
	// given (the client's own ORCPT if it sent one). An alias of several
	// addresses asked for NOTIFY=SUCCESS is reported "expanded" as a
	// whole, and its targets' NOTIFY keeps FAILURE and DELAY but not
	// SUCCESS (§6.2.7.3); a one-address alias passes NOTIFY on whole.
	given := p.String()
	if p.ORcpt == "" {
		p.ORcptType, p.ORcpt = "rfc822", to.Mailbox()
		if to.NeedsUTF8() {
			p.ORcptType = "utf-8"
		}
	}
	out := make([]spool.Recipient, 0, len(targets)+1)
	if len(targets) > 1 && p.Notify&envelope.NotifySuccess != 0 {
		// The alias itself is reported "expanded" (a success DSN) by
		// the queue, as soon as it sees it.
		out = append(out, spool.Recipient{To: to.String(), Params: given, Expanded: true})
		if p.Notify &^= envelope.NotifySuccess; p.Notify == 0 {
			p.Notify = envelope.NotifyNever
		}
	}
	params := p.String()
	var shown []string
	for _, t := range targets {
		path := envelope.Path{Local: t.Local, Domain: t.Domain}.String()
		shown = append(shown, path)
		if s.hasRcpt(path) {
			continue // the same address twice in one message: delivered once
		}
		out = append(out, spool.Recipient{To: path, Params: params})
	}
	s.log.Info("smtp: recipient expanded", "from", s.from.String(), "to", to.String(), "targets", strings.Join(shown, ","))
	return out, nil
}

// hasRcpt reports whether the transaction already has recipient path.
func (s *session) hasRcpt(path string) bool {
	for _, r := range s.rcpts {
		if strings.EqualFold(r.To, path) {
			return true
		}
	}
	return false
}

// ReloadAliases re-reads the aliases file if it changed; a malformed one
// keeps the aliases in force and the error names the file and line.
func (r *Relay) ReloadAliases() error { return r.aliases.Reload() }

// expandDSNRecipient is the queue's hook for the recipient of a DSN: a
// sender address that is an alias of a local domain gets the DSN at the
// addresses it stands for, as mail to it would.
func (r *Relay) expandDSNRecipient(to string) []string {
	p, err := envelope.ParseForwardPath(to, true)
	if err != nil {
		return nil
	}
	local, domain, ok := localTarget(r.cfg, p)
	if !ok {
		return nil
	}
	targets, aliased, err := r.expandLocal(local, domain)
	if err != nil || !aliased {
		return nil
	}
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = envelope.Path{Local: t.Local, Domain: t.Domain}.String()
	}
	return out
}
