package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay"
	"github.com/relay-mta/relay/relay/dnscheck"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/resolve"
	"github.com/urfave/cli/v3"
)

// dnsCommand is `relay dns check DOMAIN`: the DNS checklist of the
// README's "Delivering to the Internet", through the relay's own
// resolver ([dns]) and policy code.
func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "check the DNS records a mail domain publishes",
		Commands: []*cli.Command{{
			Name:      "check",
			Usage:     "look up MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT and DANE records of DOMAIN as the relay sees them",
			ArgsUsage: "DOMAIN",
			Description: "Lookups go through the [dns] servers of --config (or resolv.conf); DKIM is checked\n" +
				"against the [[dkim.sign]] keys for DOMAIN; the MTA-STS policy is fetched with the\n" +
				"system CAs plus [tls] ca_file. Exit status 1 when a record is missing or wrong.",
			Flags:  []cli.Flag{configFlag},
			Action: dnsCheck,
		}},
	}
}

func dnsCheck(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() != 1 {
		return errors.New("dns check: give one domain")
	}
	domain := strings.TrimSuffix(strings.ToLower(cmd.Args().First()), ".")
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	res, err := resolve.New(resolve.Options{Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout, Attempts: cfg.DNS.Attempts})
	if err != nil {
		return fmt.Errorf("dns check: %w", err)
	}
	roots, err := relay.RootCAs(cfg)
	if err != nil {
		return fmt.Errorf("dns check: %w", err)
	}
	o := dnscheck.Options{Resolver: res, STS: &mtasts.Source{Resolver: res, RootCAs: roots, Port: cfg.MTASTS.Port}}
	for _, s := range cfg.DKIM.Sign {
		if s.Domain != domain {
			continue
		}
		key, err := dkim.LoadKey(s.Key)
		if err != nil {
			return fmt.Errorf("dns check: [[dkim.sign]] %s %s: %w", s.Domain, s.Selector, err)
		}
		o.DKIM = append(o.DKIM, dnscheck.DKIMKey{Selector: s.Selector, Public: key.Public()})
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	items := dnscheck.Check(ctx, domain, o)
	writeCheck(os.Stdout, items)
	if dnscheck.Failed(items) {
		return fmt.Errorf("dns check: %s lacks records or has wrong ones (see above)", domain)
	}
	return nil
}

func writeCheck(w io.Writer, items []dnscheck.Item) {
	width := 0
	for _, it := range items {
		width = max(width, len(it.Record))
	}
	for _, it := range items {
		fmt.Fprintf(w, "%-*s  %-7s  %s\n", width, it.Record, it.Status, it.Text)
	}
}
