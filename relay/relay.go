// Package relay is the mail relay daemon: it wires a loaded configuration
// to the SMTP server (smtpd), the spool and the queue, and it holds the
// relay's policy: who may relay, which recipients exist, where each
// recipient goes next (Router), how a next hop is reached (Deliverer), the
// Received header and the hop limit.
package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/queue/ratelimit"
	"github.com/relay-mta/relay/queue/ratelimit/redislimit"
	"github.com/relay-mta/relay/relay/aliases"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/deliver"
	"github.com/relay-mta/relay/relay/pop3d"
	"github.com/relay-mta/relay/relay/smtpd"
	"github.com/relay-mta/relay/relay/tlsrpt"
	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/relay/webhook"
	"github.com/relay-mta/relay/spool"
)

// ShutdownGrace bounds how long a stopping relay waits for sessions that
// are in the middle of a DATA transfer.
const ShutdownGrace = 30 * time.Second

// Options are the parts of a Relay that tests replace.
type Options struct {
	Logger *slog.Logger     // nil: slog.Default()
	Now    func() time.Time // nil: time.Now
	// Resolver answers the MX and address lookups of deliveries, and DKIM
	// key, MTA-STS and TLS-RPT lookups when it also has LookupTXT; nil: a
	// resolver on [dns] servers (relay/internet.go).
	Resolver deliver.Resolver
	// RootCAs verifies next hops whose route says tls = "require" or whose
	// MTA-STS policy enforces TLS, and MTA-STS policy hosts; nil: the
	// system roots plus [tls] ca_file.
	RootCAs *x509.CertPool
}

// Relay is one running relay daemon.
type Relay struct {
	cfg   *config.Config
	log   *slog.Logger
	now   func() time.Time
	spool *spool.Spool
	users *users.DB
	// aliases is the aliases file (relay/aliasing.go); empty without one.
	aliases *aliases.Table
	smtp    *smtpd.Server
	// submit is the submission service ([submission], relay/submission.go).
	submit          *smtpd.Server
	submitListeners []net.Listener
	queue           *queue.Queue
	// logins throttles failed logins per client address, for SMTP AUTH
	// and POP3 alike.
	logins *loginLimiter
	certs  *certHolder // nil without [tls]
	dkim   *dkimPolicy // relay/dkim.go
	auth   *authPolicy // relay/auth.go: DKIM verification, SPF, DMARC, ARC

	mu        sync.Mutex
	listeners []net.Listener

	pop3          *pop3d.Server  // relay/pop3.go
	pop3Listeners []net.Listener // nil until listenPOP3

	ops *operators // admin socket and metrics (relay/operators.go)

	webhooks []*webhook.Poster // relay/webhooks.go
	// tlsReports counts TLS outcomes for TLS-RPT; nil when [tls_rpt] is
	// off (relay/internet.go).
	tlsReports *tlsrpt.Recorder
	resolver   deliver.Resolver
	// dataReaders are the 32 KiB buffered readers of DATA, kept between
	// messages instead of allocated for each (1% of the CPU of relaying
	// small mail) and not held by idle sessions.
	dataReaders sync.Pool
	// shared is the rate limiter shared with the fleet through Redis;
	// nil without [fleet] redis (relay/fleet.go).
	shared *redislimit.Limiter
	// router and deliverer are the queue's, for transfers (transfer.go).
	router    *Router
	deliverer *deliver.Deliverer
	// drain is the state of draining this node (drain.go).
	drain drainState
}

// New opens the spool and the users file and prepares the servers; Run
// starts them.
func New(cfg *config.Config, opts Options) (*Relay, error) {
	r := &Relay{cfg: cfg, log: opts.Logger, now: opts.Now, logins: newLoginLimiter()}
	r.drain.req = make(chan struct{})
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	var err error
	if cfg.UsersFile != "" {
		if r.users, err = users.Open(cfg.UsersFile, r.log); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
	}
	if r.aliases, err = aliases.Open(cfg.AliasesFile, r.log); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	// Keys are loaded before the spool opens: a bad key file stops the
	// start with an error naming it.
	if r.resolver, err = newResolver(cfg, opts.Resolver); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	roots, err := rootCAs(cfg, opts.RootCAs)
	if err != nil {
		return nil, err // names the config file, line and key
	}
	if r.dkim, err = newDKIMPolicy(cfg, r.log); err != nil {
		return nil, err // names the config file, line and key: nothing to add
	}
	if r.auth, err = newAuthPolicy(cfg, r.resolver, r.log); err != nil {
		return nil, err
	}
	secrets, err := readWebhookSecrets(cfg)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if r.shared, err = r.sharedLimiter(); err != nil { // relay/fleet.go
		return nil, fmt.Errorf("relay: %w", err)
	}
	// So are the smarthost passwords and CA files of the routes.
	router := NewRouter(cfg)
	if err := router.LoadRouteFiles(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	var tlsConfig *tls.Config
	if cfg.TLS.Cert == "" && (len(cfg.SMTP.ListenTLS) > 0 || len(cfg.POP3.ListenTLS) > 0) {
		return nil, errors.New("relay: listen_tls is set but [tls] names no cert and key (set them, or run relay serve --self-signed)")
	}
	if err := checkSubmission(cfg); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if cfg.TLS.Cert != "" {
		// Through a holder, so that ReloadTLS (SIGHUP) can swap it.
		if r.certs, err = newCertHolder(cfg.TLS.Cert, cfg.TLS.Key); err != nil {
			return nil, certError(cfg, err)
		}
		tlsConfig = r.certs.config()
	}
	// data_dir holds other people's mail and the relay's keys: private to
	// the daemon's user, whatever the modes were (spool.Open does its own
	// directory again, for other callers).
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if err := spool.MakePrivate(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("relay: data_dir %s: %w", cfg.DataDir, err)
	}
	r.spool, err = spool.Open(spool.Options{Dir: cfg.DataDir + "/spool", Logger: r.log, Now: r.now, History: cfg.Admin.History,
		MinFree: minFreeSpace(cfg), Subscribers: webhookSubscribers(cfg)})
	if err != nil {
		var nospace *spool.NoSpaceError
		if errors.As(err, &nospace) {
			return nil, err // one line that says it all; relay serve prints it as is
		}
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.ops = r.newOperators() // relay/operators.go
	r.newWebhooks(secrets)   // relay/webhooks.go
	if r.users != nil {
		router.UserExists = r.users.Exists
	}
	deliverer := &deliver.Deliverer{
		Hostname: cfg.Hostname,
		Resolver: r.resolver,
		RootCAs:  roots,
		Logger:   r.log,
		Now:      r.now,
	}
	r.applyTLSPolicies(deliverer) // relay/internet.go
	r.router, r.deliverer = router, deliverer
	var limiter ratelimit.Limiter // nil: the queue's own
	if r.shared != nil {
		limiter = r.shared
		r.ops.metrics.SharedLimits(r.shared.Up, r.shared.Fallbacks)
	}
	r.queue = queue.New(queue.Options{
		Spool:     r.spool,
		Router:    router,
		Deliverer: deliverer,
		Retry: queue.RetryPolicy{
			Min:      cfg.Queue.RetryMin,
			Max:      cfg.Queue.RetryMax,
			Lifetime: cfg.Queue.Lifetime,
		},
		PerHopConcurrency:        cfg.Queue.PerHopConcurrency,
		MaxMessageRate:           cfg.Queue.MaxMessageRate,
		MaxMessagesPerConnection: cfg.Queue.MaxMessagesPerConnection,
		ThrottleRestore:          cfg.Queue.ThrottleRestore,
		Limiter:                  limiter,
		Logger:                   r.log,
		Now:                      r.now,
		Hostname:                 cfg.Hostname,
		DelayWarning:             cfg.Queue.DelayWarning,
		SignDSN:                  r.dsnSigner(),
		OnOutcome:                r.onOutcome,
		OnDSN:                    r.onDSN,
		DSNRecipients:            r.expandDSNRecipient,
	})
	r.smtp = r.newSMTPServer(backend{r: r}, tlsConfig, r.users != nil)
	r.submit = r.newSMTPServer(backend{r: r, submission: true}, tlsConfig, true) // relay/submission.go
	r.pop3 = r.newPOP3Server(tlsConfig)
	return r, nil
}

// newSMTPServer makes an SMTP server with the configured limits: the
// relay's on [smtp], the submission service's on [submission].
func (r *Relay) newSMTPServer(b smtpd.Backend, tlsConfig *tls.Config, auth bool) *smtpd.Server {
	cfg := r.cfg
	return &smtpd.Server{
		Hostname:          cfg.Hostname,
		Backend:           b,
		Logger:            r.log,
		Metrics:           r.ops.metrics,
		TLSConfig:         tlsConfig,
		EnableAuth:        auth,
		AllowInsecureAuth: cfg.AllowInsecureAuth,
		LoopbackIsSecure:  true, // as Dovecot: a loopback client may log in without TLS
		MaxLineLength:     cfg.SMTP.MaxLineLength,
		MaxRecipients:     cfg.SMTP.MaxRecipients,
		MaxMessageSize:    cfg.SMTP.MaxMessageSize,
		MaxErrors:         cfg.SMTP.MaxErrors,
		MaxConnections:    cfg.SMTP.MaxConnections,
		CommandTimeout:    cfg.SMTP.CommandTimeout,
		DataTimeout:       cfg.SMTP.DataTimeout,
		MaxConnsPerIP:     cfg.SMTP.MaxConnsPerIP,
		// relay_networks clients are privileged from their first byte;
		// authenticated ones become so at AUTH (smtpd.Server.Trusted).
		Trusted:              cfg.InRelayNetworks,
		MaxConnsPerTrustedIP: cfg.SMTP.MaxConnsPerTrustedIP,
		ReservedConnections:  reservedConnections(cfg.SMTP.MaxConnections, cfg.SMTP.ReservedPercent),
		StressConnections:    max(cfg.SMTP.MaxConnections*cfg.SMTP.StressPercent/100, 1),
		StressTimeout:        cfg.SMTP.StressTimeout,
		MaxCommands:          cfg.SMTP.MaxCommands,
		MaxSessionRcpts:      cfg.SMTP.MaxSessionRecipients,
		SessionTimeout:       cfg.SMTP.SessionTimeout,
		TarpitAfter:          tarpitAfter(cfg.SMTP.TarpitAfter),
		TarpitDelay:          cfg.SMTP.TarpitDelay,
	}
}

// Listen opens every configured listener. It is separate from Run so that
// a caller (and a test) knows the addresses, including ports chosen by the
// system for ":0", before serving starts.
func (r *Relay) Listen() error {
	// No TCP keepalive on SMTP connections: sessions end by their own
	// timeouts (RFC 5321 §4.5.3.2), and its four setsockopt calls per
	// connection are a measurable share of accepting a message.
	lc := net.ListenConfig{KeepAlive: -1}
	for _, addr := range r.cfg.SMTP.Listen {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			r.closeListeners()
			return fmt.Errorf("relay: smtp listen: %w", err)
		}
		r.listeners = append(r.listeners, l)
	}
	for _, addr := range r.cfg.SMTP.ListenTLS {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			r.closeListeners()
			return fmt.Errorf("relay: smtps listen: %w", err)
		}
		r.listeners = append(r.listeners, tls.NewListener(l, r.smtp.TLSConfig))
	}
	if err := r.listenSubmission(lc); err != nil {
		r.closeListeners()
		return err
	}
	if err := r.listenPOP3(); err != nil {
		r.closeListeners()
		return err
	}
	if err := r.listenOperators(); err != nil {
		r.closeListeners()
		return err
	}
	return nil
}

func (r *Relay) closeListeners() {
	for _, l := range append(r.listeners, r.submitListeners...) {
		l.Close()
	}
	r.listeners, r.submitListeners = nil, nil
}

// Spool is the relay's message store, for the admin API and for tests.
func (r *Relay) Spool() *spool.Spool { return r.spool }

// Notify wakes the delivery scheduler (after an operator change).
func (r *Relay) Notify() { r.queue.Notify() }

// SMTPAddrs returns the addresses the SMTP listeners are bound to.
func (r *Relay) SMTPAddrs() []string {
	var out []string
	for _, l := range r.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// Run serves until ctx is cancelled, then shuts down gracefully: no new
// connections, sessions in DATA may finish within ShutdownGrace, and the
// spool is closed cleanly. Listen is called first if it has not been.
func (r *Relay) Run(ctx context.Context) error {
	if r.listeners == nil && r.submitListeners == nil {
		if err := r.Listen(); err != nil {
			return err
		}
	}
	qctx, stopQueue := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() { r.queue.Run(qctx); close(queueDone) }()
	stopWebhooks := r.runWebhooks()
	errc := make(chan error, len(r.listeners)+len(r.submitListeners))
	for _, l := range r.listeners {
		go func() { errc <- r.smtp.Serve(l) }()
	}
	r.serveSubmission(errc)
	r.servePOP3()
	r.serveOperators()
	go r.watchUsers(qctx) // relay/userswatch.go
	reportsDone := make(chan struct{})
	go func() {
		defer close(reportsDone)
		if txt, ok := r.resolver.(interface {
			LookupTXT(ctx context.Context, name string) ([]string, error)
		}); ok {
			r.sendTLSReports(qctx, txt.LookupTXT) // relay/internet.go
		}
	}()
	drained, drainOver := make(chan struct{}), make(chan struct{})
	go func() { r.runDrain(qctx, drained); close(drainOver) }() // relay/drain.go
	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-drained:
			break wait
		case err := <-errc:
			if errors.Is(err, smtpd.ErrServerClosed) {
				continue // a drain closed the listeners; its end ends the wait
			}
			runErr = fmt.Errorf("relay: smtp: %w", err)
			break wait
		}
	}
	r.log.Info("relay: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if err := r.smtp.Shutdown(sctx); err != nil {
		r.log.Warn("relay: sessions cut off at shutdown", "err", err)
	}
	r.shutdownSubmission(sctx)
	r.shutdownPOP3(sctx)
	r.shutdownOperators(sctx)
	stopQueue() // deliveries in progress finish on their own timeouts
	<-queueDone
	<-drainOver // a transfer in progress stops with qctx
	stopWebhooks()
	<-reportsDone
	if r.shared != nil {
		r.shared.Close()
	}
	if err := r.spool.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("relay: close spool: %w", err)
	}
	return runErr
}

// tarpitAfter maps tarpit_after (0: off) onto smtpd's TarpitAfter
// (negative: off; 0 would mean the default).
func tarpitAfter(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// reservedConnections maps reserved_percent onto smtpd's
// ReservedConnections (negative: none; 0 would mean the default): at
// least one slot when the percentage is not 0.
func reservedConnections(maxConns, percent int) int {
	if percent == 0 {
		return -1
	}
	return max(maxConns*percent/100, 1)
}

// dsnSigner signs the relay's DSNs with the DKIM key for its hostname's
// domain, or its parent's (mx.b.test, then b.test), when there is one.
func (r *Relay) dsnSigner() func([]byte) ([]byte, error) {
	for d := strings.ToLower(r.cfg.Hostname); strings.Contains(d, "."); d = d[strings.IndexByte(d, '.')+1:] {
		if s := r.DKIMSigner(d); s != nil {
			return s.Sign
		}
	}
	return nil
}
