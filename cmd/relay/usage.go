package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/urfave/cli/v3"
)

// usageError is a mistake in how a command was called: an unknown or
// missing flag, a bad flag value. main prints it as one line, then the
// command's usage line, instead of urfave/cli's whole help page.
type usageError struct {
	cmd *cli.Command
	err error
}

func (e *usageError) Error() string {
	return strings.TrimPrefix(e.cmd.FullName(), "relay ") + ": " + flagText(e.err.Error())
}

func (e *usageError) Unwrap() error { return e.err }

// usage is the command's usage line.
func (e *usageError) usage() string {
	line := e.cmd.FullName()
	if len(e.cmd.VisibleFlags()) > 0 {
		line += " [options]"
	}
	switch {
	case e.cmd.ArgsUsage != "":
		line += " " + e.cmd.ArgsUsage
	case hasSubcommands(e.cmd):
		line += " COMMAND"
	}
	return fmt.Sprintf("usage: %s  (%s --help for more)", line, e.cmd.FullName())
}

// hasSubcommands reports whether cmd has commands of its own (urfave/cli
// adds "help" to every command).
func hasSubcommands(cmd *cli.Command) bool {
	for _, c := range cmd.Commands {
		if c.Name != "help" {
			return true
		}
	}
	return false
}

var (
	unknownFlag  = regexp.MustCompile(`^flag provided but not defined: -+(\S+)`)
	flagValue    = regexp.MustCompile(`for flag -+(\S+):`)
	requiredFlag = regexp.MustCompile(`^Required flags? "([^"]+)" not set`)
)

// flagText rewrites the wording of the flag package and of urfave/cli
// ("flag provided but not defined: -bogus", `Required flag "x" not set`)
// in the form users type flags in.
func flagText(s string) string {
	if m := unknownFlag.FindStringSubmatch(s); m != nil {
		return "unknown flag --" + m[1]
	}
	if m := requiredFlag.FindStringSubmatch(s); m != nil {
		return "missing --" + strings.ReplaceAll(m[1], ", ", ", --")
	}
	return flagValue.ReplaceAllString(s, "for --$1:")
}

// quietUsageErrors makes every command of the tree answer usage mistakes
// with a usageError instead of printing its help.
func quietUsageErrors(cmd *cli.Command) {
	cmd.OnUsageError = func(_ context.Context, c *cli.Command, err error, _ bool) error {
		return &usageError{cmd: c, err: err}
	}
	if hasSubcommands(cmd) && cmd.Action == nil {
		// Without this urfave/cli answers "No help topic for 'x'".
		cmd.Action = func(ctx context.Context, c *cli.Command) error {
			if c.Args().Present() {
				return &usageError{cmd: c, err: fmt.Errorf("unknown command %q", c.Args().First())}
			}
			return cli.ShowSubcommandHelp(c)
		}
	}
	for _, sub := range cmd.Commands {
		quietUsageErrors(sub)
	}
}

// errorText is the one line main prints for err. Errors of the relay
// package start with its name, which is also the program's: said once.
func errorText(err error) string {
	msg := err.Error()
	for strings.HasPrefix(msg, "relay: ") {
		msg = strings.TrimPrefix(msg, "relay: ")
	}
	return "relay: " + msg
}
