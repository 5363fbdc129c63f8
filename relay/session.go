package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/mailauth"
	"github.com/relay-mta/relay/relay/aliases"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/spool"
)

// smtpError builds the SMTP reply a policy decision sends.
func smtpError(code int, class, subject, detail int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: msg}
}

var (
	errRelayDenied = smtpError(554, 5, 7, 1, "Relay access denied")
	errNoSuchUser  = smtpError(550, 5, 1, 1, "No such user here")
	errTooManyHops = smtpError(554, 5, 4, 6, "Too many hops (mail loop?)")
	errAuthFailed  = smtpError(535, 5, 7, 8, "Authentication credentials invalid")
	errAuthzid     = smtpError(535, 5, 7, 8, "Authorization identity (authzid) must be empty or the authentication identity")
	errNoSpace     = smtpError(452, 4, 3, 1, "Insufficient system storage, try again later")
	// errTooManyRcpts: aliases expanded the message past what one message
	// may carry (RFC 5321 §4.5.3.1.10).
	errTooManyRcpts = smtpError(452, 4, 5, 3, "Too many recipients once aliases are expanded")
)

// backend is the relay's policy, plugged into smtpd.
type backend struct {
	r *Relay
	// submission marks the submission service (relay/submission.go).
	submission bool
}

func (b backend) NewSession(c smtpd.ConnInfo) (smtpd.Session, error) {
	ip := addrOf(c.RemoteAddr)
	log := b.r.log.With("client", ip.String())
	if b.submission {
		log = log.With("service", "submission")
	}
	return &session{r: b.r, ip: ip, log: log, submission: b.submission}, nil
}

// session applies the relay's policy to one SMTP connection.
type session struct {
	r          *Relay
	submission bool // RFC 6409: AUTH before MAIL, header fix-ups
	ip         netip.Addr
	log        *slog.Logger
	helo       smtpd.HelloInfo
	user       string // authenticated user, "" when not
	// spf is the SPF verdict on the current MAIL FROM (relay/auth.go),
	// nil when it was not checked.
	spf *mailauth.SPFResult

	from   envelope.Path
	params envelope.MailParams
	rcpts  []spool.Recipient
	// given are the recipients as the client gave them, before aliases
	// were expanded (the Received field names the only one).
	given []string
}

func (s *session) Hello(h smtpd.HelloInfo) error {
	s.helo = h
	return nil
}

func (s *session) Auth(identity, username, password string) error {
	if identity != "" && !strings.EqualFold(identity, username) {
		// RFC 4616 §2: an authzid asks to act as someone else. Nobody may
		// here; ignoring it would log the client in as a user it did not
		// ask to be. Refused before any password is checked.
		s.log.Info("smtp: authentication refused: authorization identity differs", "authzid", identity, "user", username)
		return errAuthzid
	}
	if !s.r.logins.begin(s.ip) {
		s.log.Warn("smtp: login refused: address banned after failed logins", "user", username)
		return smtpError(421, 4, 7, 0, s.r.logins.refusal(s.ip))
	}
	if s.r.users == nil || !s.r.users.Authenticate(username, password) {
		delay := s.r.logins.failed(s.ip)
		s.log.Info("smtp: authentication failed", "user", username, "delay", delay)
		time.Sleep(delay)
		return errAuthFailed
	}
	s.r.logins.succeeded(s.ip)
	s.user = strings.ToLower(username)
	return nil
}

func (s *session) Mail(from envelope.Path, p envelope.MailParams) error {
	if s.submission && s.user == "" {
		return errAuthRequired // RFC 6409 §4.3, RFC 4954 §6
	}
	if !s.r.spool.Space().Room(p.Size) {
		return errNoSpace
	}
	if s.user != "" && !s.mayUseSender(from) {
		s.log.Info("smtp: sender refused", "user", s.user, "from", from.String())
		return smtpError(553, 5, 7, 1, fmt.Sprintf("Sender address %s not owned by user %s", from.String(), s.user))
	}
	if p.Priority != 0 && !s.mayRelay() && s.r.cfg.SMTP.MTPriorityUntrusted != config.PriorityKeep {
		// RFC 6710 §4: a priority from an untrusted client is not
		// honoured; the message goes on at the default, 0.
		s.log.Info("smtp: MT-PRIORITY of an untrusted client reset to 0", "from", from.String(), "priority", p.Priority)
		p.Priority = 0
	}
	var spf *mailauth.SPFResult
	if s.r.auth.checks(s.mayRelay()) {
		var err error
		if spf, err = s.r.auth.spf(s.ip, s.helo.Name, from, s.log); err != nil {
			s.log.Info("smtp: sender refused", "from", from.String(), "reason", err.Error())
			return err
		}
	}
	s.from, s.params, s.rcpts, s.given, s.spf = from, p, nil, nil, spf
	return nil
}

// mayUseSender reports whether the authenticated user may send as from:
// the null path, their own name at any local domain, or a domain the
// configuration grants them ([sender_domains]).
func (s *session) mayUseSender(from envelope.Path) bool {
	if from.IsNull() {
		return true
	}
	domain := strings.ToLower(strings.TrimSuffix(from.Domain, "."))
	if strings.EqualFold(from.Local, s.user) && len(from.Route) == 0 && s.r.cfg.IsLocalDomain(domain) {
		return true
	}
	for _, d := range s.r.cfg.SenderDomains[s.user] {
		if d == "*" || d == domain {
			return true
		}
	}
	return false
}

// mayRelay reports whether the client may send mail anywhere.
func (s *session) mayRelay() bool {
	return s.user != "" || s.r.cfg.InRelayNetworks(s.ip)
}

func (s *session) Rcpt(to envelope.Path, p envelope.RcptParams) error {
	if err := s.checkRcpt(to); err != nil {
		s.log.Info("smtp: recipient refused", "from", s.from.String(), "to", to.String(), "reason", err.Error())
		return err
	}
	rcpts, err := s.rcptsFor(to, p) // aliases expanded (relay/aliasing.go)
	if err != nil {
		s.log.Info("smtp: recipient refused", "from", s.from.String(), "to", to.String(), "reason", err.Error())
		return err
	}
	if len(s.rcpts)+len(rcpts) > aliases.MaxTargets {
		return errTooManyRcpts
	}
	s.rcpts = append(s.rcpts, rcpts...)
	s.given = append(s.given, to.String())
	return nil
}

// checkRcpt is the relay decision of RFC 5321 §3.6 and docs/design.md §12: mail
// for our local users, mail for relay_domains, and anything from a client
// that may relay; every other form of address, however it is dressed up
// (source route, quoted '@' or '%', address literal), is relaying and
// refused for outsiders.
func (s *session) checkRcpt(to envelope.Path) error {
	cfg := s.r.cfg
	if to.IsPostmaster() {
		return nil // RFC 5321 §4.5.1: always accepted
	}
	// Decide on what the Router will route: our own hops done, a repeated
	// host collapsed, the percent hack applied when it is on.
	to = ownHopsDone(cfg, to)
	if len(to.Route) > 0 {
		switch {
		case cfg.SourceRoutes == config.SourceRoutesReject:
			return smtpError(550, 5, 7, 1, "Source routes are not accepted here")
		case cfg.SourceRoutes == config.SourceRoutesStrip:
			to = to.WithoutRoute() // delivered as the plain mailbox: judged as one
		case !s.mayRelay() && !s.routeStaysHome(to):
			return errRelayDenied
		case !cfg.RouteLiterals && strings.HasPrefix(to.Route[0], "["):
			return smtpError(550, 5, 7, 1, "Address literals are not accepted in source routes")
		default:
			return nil
		}
	}
	domain := strings.ToLower(strings.TrimSuffix(to.Domain, "."))
	if !s.mayRelay() && strings.ContainsAny(to.Local, "@%!") {
		// Sender-specified routing hidden in the local part ("u%x@us",
		// "\"u@x\"@us", "x!u@us"): relaying for outsiders, as in Postfix's
		// allow_untrusted_routing = no.
		return errRelayDenied
	}
	if cfg.IsLocalDomain(domain) {
		// A mailbox, an alias, a sub-address or a catch-all
		// (relay/aliasing.go); anything else is 550 5.1.1.
		_, _, err := s.r.expandLocal(to.Local, domain)
		return err
	}
	if s.mayRelay() || cfg.IsRelayDomain(domain) {
		return nil
	}
	return errRelayDenied
}

// routeStaysHome reports whether a source route (our own hops already
// done) takes mail only where an outsider may send it: every remaining
// hop a relay domain, since the mail goes to each in turn, and the final
// destination, the mailbox domain after every hop, a local or relay
// domain, with no routing hidden in the local part. A route whose first
// hop is a relay domain but which ends elsewhere
// (<@relayed.test:victim@remote.test>) would make the next relay, which
// trusts us, hand the mail to the world.
func (s *session) routeStaysHome(to envelope.Path) bool {
	cfg := s.r.cfg
	for _, hop := range to.Route {
		if !cfg.IsRelayDomain(hop) {
			return false
		}
	}
	domain := strings.ToLower(strings.TrimSuffix(to.Domain, "."))
	if strings.ContainsAny(to.Local, "@%!") {
		return false
	}
	return cfg.IsLocalDomain(domain) || cfg.IsRelayDomain(domain)
}

// maxHeaderBytes bounds the header section kept in memory for the
// policy (hand-off field, hop count, DKIM); a header section longer than
// that is stored and forwarded, but its excess is treated as body, as
// Postfix's header_size_limit does.
const maxHeaderBytes = 256 << 10

func (s *session) Data(r io.Reader) (string, error) {
	br, _ := s.r.dataReaders.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(r, 32<<10)
	} else {
		br.Reset(r)
	}
	defer func() {
		br.Reset(nil)
		s.r.dataReaders.Put(br)
	}()
	header, err := readHeader(br, maxHeaderBytes)
	if err != nil {
		return "", err
	}
	handoff, header := splitHandoff(header)
	if !s.mayRelay() || s.submission {
		handoff = "" // only relays we trust may suppress a copy, and they do not submit
	}
	token, origin := handoffTokens(handoff, s.r.cfg.Hostname, header)
	if n := countReceived(header); n >= s.r.cfg.MaxHops {
		s.log.Info("smtp: message refused", "from", s.from.String(), "reason", "hop limit", "received_headers", n)
		return "", errTooManyHops
	}
	now := s.r.now()
	id, err := s.r.spool.NewMessageID()
	if err != nil {
		s.log.Error("smtp: cannot store message", "err", err)
		return "", fmt.Errorf("relay: new message ID: %w", err)
	}
	// The body streams into the spool as it arrives (spool.Draft): memory
	// does not grow with the message.
	draft := s.r.spool.NewDraft(id)
	defer draft.Discard()
	if _, err := io.Copy(draft, br); err != nil {
		if errors.Is(err, spool.ErrNoSpace) || errors.Is(err, syscall.ENOSPC) {
			s.log.Warn("smtp: message refused: data_dir short of space", "id", id)
			return "", errNoSpace
		}
		return "", err // the client's refusal or lost connection, or ours
	}
	if s.submission {
		header = submissionFixups(header, id, s.r.cfg.Hostname, now)
	}
	// Authentication (relay/auth.go): DKIM, SPF, DMARC and ARC verdicts
	// on what arrives; then DKIM signatures (relay/dkim.go) on what we
	// originate. Mail handed over by one of our relays (a token) was
	// signed at entry, and is sealed here as any mail passing through.
	originate := s.mayRelay() && token == ""
	_, fields, header, err := s.r.auth.judge(judgeInput{id: id, header: header, body: draft.Reader,
		seal: !originate, dmarc: s.r.auth.checks(s.mayRelay()), spf: s.spf}, s.log)
	if err != nil {
		if se := (*smtp.SMTPError)(nil); errors.As(err, &se) {
			s.log.Info("smtp: message refused", "id", id, "from", s.from.String(), "reason", se.Error())
		}
		return "", err
	}
	if originate {
		sigs, err := s.r.dkim.signature(id, header, draft.Reader, s.log)
		if err != nil {
			return "", err
		}
		fields = append(fields, sigs...)
	}
	if len(fields) > 0 { // most relayed mail gets none: no copy of the header then
		header = append(fields, header...)
	}
	forRcpt := ""
	if len(s.given) == 1 {
		forRcpt = s.given[0]
	}
	hdr := receivedHeader(s.helo.Name, s.ip.String(), s.r.cfg.Hostname,
		withProtocol(s.helo.ESMTP, s.helo.TLS != nil, s.user != "", s.params.SMTPUTF8), id, forRcpt, now)
	head := make([]byte, 0, len(hdr)+len(header))
	head = append(append(head, hdr...), header...)
	env := spool.Envelope{
		From:       s.from.String(),
		MailParams: s.params.String(),
		Received:   now,
		Client:     s.ip.String(),
		Helo:       s.helo.Name,
		AuthUser:   s.user,
		Hops:       countReceived(head),
		// The schedule index of its class (spool/doc.go): the priority
		// as honoured, after mt_priority_untrusted.
		Priority: int8(max(-9, min(9, s.params.Priority))),
		Handoff:  origin,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The token is remembered a little longer than the sender can retry.
	stored, err := s.r.spool.EnqueueDraft(ctx, token, s.r.cfg.Queue.Lifetime+time.Hour, env, s.rcpts, head, draft)
	if err != nil {
		s.log.Error("smtp: cannot store message", "id", id, "err", err)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, spool.ErrNoSpace) {
			return "", errNoSpace
		}
		return "", fmt.Errorf("relay: store message: %w", err)
	}
	if stored != id {
		s.log.Info("accepted again, not stored twice", "id", stored, "handoff", handoff, "from", env.From)
		return stored, nil
	}
	s.r.queue.Notify()
	tos := make([]string, len(s.rcpts))
	for i, r := range s.rcpts {
		tos[i] = r.To
	}
	s.log.Info("accepted", "id", id, "from", env.From, "to", strings.Join(tos, ","), "size", int64(len(head))+draft.Size(), "helo", s.helo.Name)
	return id, nil
}

// readHeader reads the header section of a message: its lines up to and
// with the empty line that ends it, or up to max bytes (then the rest is
// body), or the whole message when it has no empty line.
func readHeader(br *bufio.Reader, max int) ([]byte, error) {
	var h []byte
	for len(h) < max {
		line, err := br.ReadSlice('\n')
		h = append(h, line...)
		switch {
		case err == io.EOF:
			return h, nil
		case err != nil && err != bufio.ErrBufferFull:
			return nil, err
		case err == nil && (len(line) == 2 && line[0] == '\r' || len(line) == 1):
			return h, nil // the empty line
		}
	}
	return h, nil
}

func (s *session) Reset() {
	s.from, s.params, s.rcpts, s.given, s.spf = envelope.Path{}, envelope.MailParams{}, nil, nil, nil
}

func (s *session) Close() {}
