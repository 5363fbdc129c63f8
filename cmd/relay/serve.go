package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"

	"github.com/relay-mta/relay/relay"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
	"github.com/urfave/cli/v3"
)

var configFlag = &cli.StringFlag{Name: "config", Usage: "TOML config `FILE` (embedded defaults when absent)"}

// loadConfig reads --config, or the embedded defaults without it.
func loadConfig(cmd *cli.Command) (*config.Config, error) {
	if path := cmd.String("config"); path != "" {
		return config.Load(path)
	}
	return config.Default(), nil
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay daemon",
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text (key=value lines) or json (one JSON object a line)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to `FILE` until the relay stops"},
			&cli.StringFlag{Name: "memprofile", Usage: "write a heap profile (allocations since start) to `FILE` when the relay stops"},
			&cli.BoolFlag{Name: "self-signed", Usage: "when [tls] names no certificate, make a self-signed one under data_dir/tls (test setups only)"},
			&cli.BoolFlag{Name: "drain", Usage: "accept no mail: transfer (--to) or deliver the queue, then exit (a node leaving its fleet)"},
			&cli.StringFlag{Name: "to", Usage: "with --drain: transfer the queue to the relay at `HOST:PORT`"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			// Everything the daemon creates (spool files through Badger,
			// which asks for 0666, keys, sockets) is its user's alone.
			syscall.Umask(0o077)
			if cmd.String("to") != "" && !cmd.Bool("drain") {
				return errors.New("--to goes with --drain")
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(cmd.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			if path := cmd.String("cpuprofile"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if path := cmd.String("memprofile"); path != "" {
				defer writeHeapProfile(path)
			}
			log, err := newLogger(cmd.String("log-format"), level)
			if err != nil {
				return err
			}
			if cmd.Bool("self-signed") && cfg.TLS.Cert == "" {
				if cfg.TLS.Cert, cfg.TLS.Key, err = relay.WriteSelfSigned(cfg.DataDir, cfg.Hostname, slices.Concat(cfg.SMTP.Listen, cfg.SMTP.ListenTLS, cfg.POP3.Listen, cfg.POP3.ListenTLS)); err != nil {
					return fmt.Errorf("--self-signed: %w", err)
				}
				// Said loudly: no peer that verifies certificates accepts it.
				log.Warn("using a SELF-SIGNED certificate (--self-signed): for tests only", "cert", cfg.TLS.Cert)
			}
			r, err := relay.New(cfg, relay.Options{Logger: log})
			if nospace := (*spool.NoSpaceError)(nil); errors.As(err, &nospace) {
				return cli.Exit(nospace.Error(), 1) // the one line, without "relay: "
			}
			if err != nil {
				return err
			}
			if err := r.Listen(); err != nil {
				return err
			}
			if cmd.Bool("drain") {
				d, err := r.Drain(cmd.String("to"))
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "relay %s: %s\n", cfg.Hostname, d.Result)
				go reloadOnHangup(ctx, r, log)
				return r.Run(ctx)
			}
			// Said once, plainly, for the newcomer who just typed the command.
			pop3 := ""
			if addrs := r.POP3Addrs(); len(addrs) > 0 {
				pop3 = "; POP3 on " + strings.Join(addrs, ", ")
			}
			if addrs := r.SubmissionAddrs(); len(addrs) > 0 {
				pop3 = "; submission on " + strings.Join(addrs, ", ") + pop3
			}
			fmt.Fprintf(os.Stderr, "relay %s: SMTP on %s%s; mail stored in %s\n",
				cfg.Hostname, strings.Join(r.SMTPAddrs(), ", "), pop3, cfg.DataDir)
			go reloadOnHangup(ctx, r, log)
			return r.Run(ctx)
		},
	}
}

// writeHeapProfile writes the heap profile, whose alloc_space view shows
// where the relay allocated since it started.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "--memprofile: %v\n", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintf(os.Stderr, "--memprofile: %v\n", err)
	}
}

// reloadOnHangup re-reads the users file, the aliases file and the TLS
// certificate at each SIGHUP until ctx ends, as daemons conventionally
// do; the relay also notices changes to the users and aliases files by
// itself within relay.UsersPollInterval.
func reloadOnHangup(ctx context.Context, r *relay.Relay, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := r.ReloadUsers(); err != nil {
				log.Error("SIGHUP: users file not reloaded; keeping the users in force", "err", err)
			} else {
				log.Info("SIGHUP: users file re-read")
			}
			if err := r.ReloadAliases(); err != nil {
				log.Error("SIGHUP: aliases file not reloaded; keeping the aliases in force", "err", err)
			}
			if err := r.ReloadTLS(); err != nil {
				log.Error("SIGHUP: TLS certificate not reloaded; keeping the one in use", "err", err)
			}
		}
	}
}

// newLogger makes the daemon's logger: one line per event on stderr, as
// key=value text or as JSON for log collectors.
func newLogger(format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
