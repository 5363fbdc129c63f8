// Command relay is the mail relay's single binary: the daemon (serve) and
// the tools that users and operators run against it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runApp(ctx, os.Args, os.Stderr))
}

// runApp runs the command line args and returns the exit status; an
// error is one line on stderr (and, for a usage mistake, the command's
// usage line).
func runApp(ctx context.Context, args []string, stderr io.Writer) int {
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
			authCommand(),
		},
		ErrWriter: stderr,
	}
	quietUsageErrors(app)
	if err := app.Run(ctx, expandReadArgs(args)); err != nil {
		fmt.Fprintln(stderr, errorText(err))
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			fmt.Fprintln(stderr, ue.usage())
		}
		return 1
	}
	return 0
}
