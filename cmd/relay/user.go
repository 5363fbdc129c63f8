package main

import (
	"context"
	"errors"
	"fmt"

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
		},
	}
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
