package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/relay-mta/relay/relay/users"
	"github.com/urfave/cli/v3"
	"golang.org/x/crypto/bcrypt"
)

func userCommand() *cli.Command {
	pwFlag := &cli.StringFlag{Name: "password-file", Usage: "read the password from the first line of `FILE`", Required: true}
	return &cli.Command{
		Name:  "user",
		Usage: "manage the users who may authenticate (SMTP AUTH, POP3)",
		Commands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a user",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{configFlag, pwFlag},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					return editUser(cmd, "added to", func(path, name, pw string) error {
						return users.Add(path, name, pw, bcrypt.DefaultCost)
					})
				},
			},
			{
				Name:      "passwd",
				Usage:     "change a user's password",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{configFlag, pwFlag},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					return editUser(cmd, "has a new password in", func(path, name, pw string) error {
						return users.SetPassword(path, name, pw, bcrypt.DefaultCost)
					})
				},
			},
			{
				Name:        "del",
				Usage:       "remove a user",
				Description: "The user can no longer log in (SMTP AUTH, POP3) nor receive mail; mail\nalready in their mailbox stays in the spool.",
				ArgsUsage:   "NAME",
				Flags:       []cli.Flag{configFlag},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					return editUser(cmd, "removed from", func(path, name, _ string) error {
						return users.Delete(path, name)
					})
				},
			},
			{
				Name:  "unban",
				Usage: "lift the login ban of a client address in the running daemon",
				Description: "After ten failed logins (SMTP AUTH or POP3) within 15 minutes an address\n" +
					"is refused for 15 minutes. unban lifts that at once and forgets the\n" +
					"address's failed logins. The daemon is reached through its admin socket:\n" +
					"--admin SOCKET, or the [admin] socket of --config FILE.",
				ArgsUsage: "ADDRESS",
				Flags: []cli.Flag{
					configFlag,
					&cli.StringFlag{Name: "admin", Usage: "the daemon's admin `SOCKET` (instead of the one --config names)"},
				},
				Action: userUnban,
			},
		},
	}
}

// userUnban is `relay user unban ADDRESS`.
func userUnban(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() != 1 {
		return errors.New("user unban: give exactly one client ADDRESS")
	}
	ip, err := netip.ParseAddr(cmd.Args().First())
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("user unban: %q is not an IP address", cmd.Args().First())
	}
	a, err := adminClient(cmd)
	if err != nil {
		return fmt.Errorf("user unban: %w", err)
	}
	u, err := a.Unban(ctx, ip.String())
	if err != nil {
		return fmt.Errorf("user unban %s: %w", ip, err)
	}
	if u.Forgotten {
		fmt.Printf("%s: login ban lifted, failed logins forgotten\n", u.Address)
	} else {
		fmt.Printf("%s: was not banned and had no failed logins\n", u.Address)
	}
	return nil
}

// editUser runs one edit of the users file named by the configuration;
// every subcommand but del reads the new password first.
func editUser(cmd *cli.Command, done string, edit func(path, name, password string) error) error {
	name := cmd.Args().First()
	if name == "" || cmd.Args().Len() != 1 {
		return errors.New("user: give exactly one user NAME")
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	if cfg.UsersFile == "" {
		return errors.New("user: the configuration has no users_file")
	}
	var pw string
	if cmd.Name != "del" {
		if pw, err = users.ReadPasswordFile(cmd.String("password-file")); err != nil {
			return err
		}
	}
	if err := edit(cfg.UsersFile, name, pw); err != nil {
		return err
	}
	// A running relay notices the change within relay.UsersPollInterval
	// (or at once on SIGHUP).
	fmt.Printf("user %s %s %s\n", name, done, cfg.UsersFile)
	return nil
}
