package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/urfave/cli/v3"
)

// dkimVerifyTimeout bounds the DNS lookups of `relay dkim verify`.
const dkimVerifyTimeout = 30 * time.Second

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "make DKIM signing keys and check DKIM signatures",
		Commands: []*cli.Command{
			{
				Name:  "keygen",
				Usage: "generate a signing key and print the DNS TXT record that publishes it",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "domain", Usage: "signing `DOMAIN` (d=)", Required: true},
					&cli.StringFlag{Name: "selector", Usage: "`SELECTOR` (s=): the key is published at SELECTOR._domainkey.DOMAIN", Required: true},
					// RSA by default: every verifier knows it, while some large
					// receivers still ignore ed25519 signatures (RFC 8463 suggests
					// signing with both).
					&cli.StringFlag{Name: "algorithm", Value: string(dkim.RSA), Usage: "key type: ed25519 or rsa (2048 bits)"},
					&cli.StringFlag{Name: "out", Usage: "write the private key (PEM, mode 0600) to new `FILE`", Required: true},
				},
				Action: dkimKeygen,
			},
			{
				Name:      "verify",
				Usage:     "check the DKIM signatures of the message on standard input; exit 1 unless all pass",
				ArgsUsage: "< MESSAGE",
				Flags:     []cli.Flag{configFlag},
				Action:    dkimVerify,
			},
		},
	}
}

func dkimKeygen(_ context.Context, cmd *cli.Command) error {
	domain, selector, out := cmd.String("domain"), cmd.String("selector"), cmd.String("out")
	key, err := dkim.GenerateKey(dkim.Algorithm(cmd.String("algorithm")))
	if err != nil {
		return err
	}
	// The record first: it checks the names before anything is written.
	record, err := dkim.TXTRecord(selector, domain, key.Public())
	if err != nil {
		return err
	}
	if err := dkim.WriteKey(out, key); err != nil {
		return err
	}
	abs, err := filepath.Abs(out) // the config resolves relative paths from data_dir
	if err != nil {
		abs = out
	}
	fmt.Println(record)
	fmt.Fprintf(os.Stderr, "relay dkim: private key written to %s. Publish the record above in DNS, or put its text in\n"+
		"[dkim.keys] of relays without DNS, then sign with\n\n"+
		"[[dkim.sign]]\ndomain = %q\nselector = %q\nkey = %q\n",
		out, domain, selector, abs)
	return nil
}

func dkimVerify(ctx context.Context, cmd *cli.Command) error {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	msg, err := io.ReadAll(io.LimitReader(os.Stdin, cfg.SMTP.MaxMessageSize+1))
	if err != nil {
		return fmt.Errorf("dkim verify: read message: %w", err)
	}
	if int64(len(msg)) > cfg.SMTP.MaxMessageSize {
		return fmt.Errorf("dkim verify: message larger than max_message_size (%d bytes)", cfg.SMTP.MaxMessageSize)
	}
	ctx, cancel := context.WithTimeout(ctx, dkimVerifyTimeout)
	defer cancel()
	results, err := (&dkim.Verifier{Keys: cfg.DKIM.Keys}).Verify(ctx, msg)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		fmt.Println("dkim=none")
		return errors.New("dkim verify: the message has no DKIM-Signature")
	}
	failed := 0
	for _, r := range results {
		fmt.Println(r)
		if r.Status != dkim.Pass {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("dkim verify: %d of %d signatures did not pass", failed, len(results))
	}
	return nil
}
