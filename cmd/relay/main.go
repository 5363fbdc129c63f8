// Command relay is the mail relay's single binary: the daemon (serve) and
// the tools that users and operators run against it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := &cli.Command{
		Name:  "relay",
		Usage: "a store-and-forward SMTP mail relay",
		Commands: []*cli.Command{
			serveCommand(),
			userCommand(),
			sendCommand(),
			readCommand(),
			dkimCommand(),
			queueCommand(),
			dnsCommand(),
		},
	}
	if err := app.Run(ctx, expandReadArgs(os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}
