package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/relay-mta/relay/relay"
	"github.com/relay-mta/relay/relay/config"
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
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to `FILE` until the relay stops"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
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
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			r, err := relay.New(cfg, relay.Options{Logger: log})
			if err != nil {
				return err
			}
			if err := r.Listen(); err != nil {
				return err
			}
			// Said once, plainly, for the newcomer who just typed the command.
			fmt.Fprintf(os.Stderr, "relay %s: SMTP on %s; mail stored in %s\n",
				cfg.Hostname, strings.Join(r.SMTPAddrs(), ", "), cfg.DataDir)
			return r.Run(ctx)
		},
	}
}
