package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd"
)

// The submission service (RFC 6409): [submission] listen (port 587 style,
// STARTTLS) and listen_tls (465, implicit TLS, RFC 8314) run a second SMTP
// server with the relay's policy and two differences: a session must
// authenticate before MAIL (530 5.7.0), and a message without Date or
// Message-ID gets them (RFC 6409 §8.1, §8.3) before it is signed with the
// [[dkim.sign]] key of its From domain, as all mail from authenticated
// users is. What an authenticated user may send as is the same as on the
// relay's own port.

var errAuthRequired = smtpError(530, 5, 7, 0, "Authentication required")

// checkSubmission refuses a [submission] on which nobody could ever log
// in, before anything is opened.
func checkSubmission(cfg *config.Config) error {
	sub := cfg.Submission
	switch {
	case len(sub.Listen)+len(sub.ListenTLS) == 0:
		return nil
	case cfg.UsersFile == "":
		return errors.New("[submission] needs users_file: submission requires AUTH")
	case len(sub.ListenTLS) > 0 && cfg.TLS.Cert == "":
		return errors.New("[submission] listen_tls is set but [tls] names no cert and key (set them, or run relay serve --self-signed)")
	case len(sub.Listen) > 0 && cfg.TLS.Cert == "" && !cfg.AllowInsecureAuth:
		return errors.New("[submission] listen needs [tls] cert and key: AUTH is offered only after STARTTLS (or set allow_insecure_auth, for tests on loopback)")
	}
	return nil
}

// listenSubmission opens the [submission] listeners.
func (r *Relay) listenSubmission(lc net.ListenConfig) error {
	for _, addr := range r.cfg.Submission.Listen {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return fmt.Errorf("relay: submission listen: %w", err)
		}
		r.submitListeners = append(r.submitListeners, l)
	}
	for _, addr := range r.cfg.Submission.ListenTLS {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return fmt.Errorf("relay: submission listen_tls: %w", err)
		}
		r.submitListeners = append(r.submitListeners, tls.NewListener(l, r.submit.TLSConfig))
	}
	return nil
}

// SubmissionAddrs returns the addresses the submission listeners are
// bound to: listen first, then listen_tls.
func (r *Relay) SubmissionAddrs() []string {
	var out []string
	for _, l := range r.submitListeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// serveSubmission serves the submission listeners until shutdown; errc
// receives what ends each one.
func (r *Relay) serveSubmission(errc chan<- error) {
	for _, l := range r.submitListeners {
		go func() { errc <- r.submit.Serve(l) }()
	}
}

// shutdownSubmission stops the submission service like the SMTP one.
func (r *Relay) shutdownSubmission(ctx context.Context) {
	if len(r.submitListeners) == 0 {
		return
	}
	if err := r.submit.Shutdown(ctx); err != nil && !errors.Is(err, smtpd.ErrServerClosed) {
		r.log.Warn("relay: submission sessions cut off at shutdown", "err", err)
	}
}

// submissionFixups returns the header section of a submitted message with
// a Date and a Message-ID field in front when it has none (RFC 6409 §8.1,
// §8.3), as a submission server adds them; id is the queue ID.
func submissionFixups(header []byte, id, hostname string, now time.Time) []byte {
	var add []byte
	if !hasField(header, "Date") {
		add = append(add, "Date: "+now.Format(time.RFC1123Z)+"\r\n"...)
	}
	if !hasField(header, "Message-ID") {
		var nonce [4]byte
		rand.Read(nonce[:])
		add = append(add, "Message-ID: <"+id+"."+hex.EncodeToString(nonce[:])+"@"+headerSafe(hostname)+">\r\n"...)
	}
	if add == nil {
		return header
	}
	return append(add, header...)
}

// hasField reports whether the header section has a field called name
// (any case); continuation lines are not field names.
func hasField(header []byte, name string) bool {
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i+1], header[i+1:]
		} else {
			header = nil
		}
		if n := bytes.IndexByte(line, ':'); n > 0 && bytes.EqualFold(bytes.TrimRight(line[:n], " \t"), []byte(name)) {
			return true
		}
	}
	return false
}
