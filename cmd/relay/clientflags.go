package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/relay-mta/relay/relay/users"
	"github.com/urfave/cli/v3"
)

// Flags and helpers shared by the client commands, send and read.

// passwordEnv is where a password comes from when no --password-file is
// given. Never from a flag value, which anyone can read in ps.
const passwordEnv = "RELAY_PASSWORD"

func serverFlag(usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: "server", Usage: usage}
}

var (
	clientUserFlag = &cli.StringFlag{Name: "user", Usage: "log in as `NAME`"}
	clientPwFlag   = &cli.StringFlag{Name: "password-file", Usage: "read the password from the first line of `FILE` (else $" + passwordEnv + ")"}
	clientCAFlag   = &cli.StringFlag{Name: "ca", Usage: "trust the server certificate(s) in PEM `FILE` instead of the system roots"}
)

// clientPassword returns the password for --user from --password-file or
// the environment.
func clientPassword(cmd *cli.Command) (string, error) {
	if path := cmd.String("password-file"); path != "" {
		return users.ReadPasswordFile(path)
	}
	if pw, ok := os.LookupEnv(passwordEnv); ok && pw != "" {
		return pw, nil
	}
	return "", fmt.Errorf("--user needs --password-file FILE or %s in the environment", passwordEnv)
}

// clientTLSConfig is nil (system roots) unless --ca names a file.
func clientTLSConfig(cmd *cli.Command) (*tls.Config, error) {
	path := cmd.String("ca")
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("--ca " + path + ": no PEM certificate in it")
	}
	return &tls.Config{RootCAs: pool}, nil
}
