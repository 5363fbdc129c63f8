package config

// Submission is the [submission] table: the message submission service of
// RFC 6409, for mail clients. Every session must authenticate before
// MAIL; submitted mail gets Date and Message-ID fields when it has none
// and is signed with the [[dkim.sign]] keys of its From domain.
type Submission struct {
	// Listen (listen) are host:port addresses with STARTTLS, port 587
	// style.
	Listen []string
	// ListenTLS (listen_tls) are host:port addresses with implicit TLS
	// (RFC 8314), port 465 style; they need [tls].
	ListenTLS []string
}

type fileSubmission struct {
	Listen    []string `toml:"listen"`
	ListenTLS []string `toml:"listen_tls"`
}

// submission checks [submission]. AUTH needs users, so a listener without
// a users file is a mistake; listen_tls without a certificate is refused
// at start (relay serve --self-signed may still supply one).
func (v *validator) submission(c *Config, fc *fileConfig) {
	c.Submission.Listen = v.listeners(p("submission", "listen"), fc.Submission.Listen)
	c.Submission.ListenTLS = v.listeners(p("submission", "listen_tls"), fc.Submission.ListenTLS)
	if len(c.Submission.Listen)+len(c.Submission.ListenTLS) > 0 && fc.UsersFile == "" {
		key := "listen"
		if len(c.Submission.Listen) == 0 {
			key = "listen_tls"
		}
		v.errorf(p("submission", key), "needs users_file: submission requires AUTH")
	}
}
