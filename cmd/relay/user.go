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
					return editUser(cmd, func(path, name, pw string) error {
						return users.Add(path, name, pw, bcrypt.DefaultCost)
					})
				},
			},
		},
	}
}

// editUser runs one edit of the users file named by the configuration.
func editUser(cmd *cli.Command, edit func(path, name, password string) error) error {
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
	pw, err := users.ReadPasswordFile(cmd.String("password-file"))
	if err != nil {
		return err
	}
	if err := edit(cfg.UsersFile, name, pw); err != nil {
		return err
	}
	fmt.Printf("user %s: written to %s\n", name, cfg.UsersFile)
	return nil
}
