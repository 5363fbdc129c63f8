package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/urfave/cli/v3"
)

// `relay queue transfer` and `relay queue drain`: handing a node's queue
// to another relay of the fleet and draining the node (design §18).

func queueTransferCommand() *cli.Command {
	return &cli.Command{
		Name:      "transfer",
		Usage:     "hand messages to another relay (with their hand-off token: never twice) and retire them here",
		ArgsUsage: "--to HOST:PORT ID...|--all",
		Description: "Each message is held, waits for a delivery in progress to finish, and its\n" +
			"recipients still to deliver go to HOST:PORT over SMTP as a delivery sends them\n" +
			"(DSN parameters, MT-PRIORITY, BY); those accepted there are recorded\n" +
			"\"transferred\" and the message leaves the queue. Recipients in local mailboxes,\n" +
			"and recipients the other relay refuses, stay and are delivered here.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the other relay's SMTP `HOST:PORT`", Required: true},
			&cli.BoolFlag{Name: "all", Usage: "every queued message, held ones too"},
		},
		Action: queueTransfer,
	}
}

func queueDrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "drain",
		Usage: "make the daemon accept no more mail, transfer (--to) or deliver its queue, and exit",
		Description: "The daemon closes its SMTP and submission listeners at once (sessions in\n" +
			"progress finish; idle ones are told 421 4.3.2), then transfers every queued\n" +
			"message to --to HOST:PORT as `relay queue transfer --all` does, again every few\n" +
			"seconds while some are left, or without --to delivers them as usual; it exits\n" +
			"when its queue is empty. The command returns at once.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "transfer the queue to the relay at `HOST:PORT`"},
		},
		Action: queueDrain,
	}
}

func queueTransfer(ctx context.Context, cmd *cli.Command) error {
	ids := cmd.Args().Slice()
	all := cmd.Bool("all")
	if all == (len(ids) > 0) {
		return errors.New("queue transfer: give message IDs or --all, not both or neither")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	start := time.Now()
	changes, err := a.Transfer(ctx, cmd.String("to"), ids, all)
	if err != nil {
		return fmt.Errorf("queue transfer: %w", err)
	}
	elapsed := time.Since(start)
	if cmd.Bool("json") {
		if changes == nil {
			changes = []api.Change{}
		}
		if err := printQueueJSON(changes); err != nil {
			return err
		}
	}
	moved, left := 0, 0
	for _, c := range changes {
		if c.Recipients > 0 {
			moved++
		} else {
			left++
		}
		if !cmd.Bool("json") {
			fmt.Printf("transfer %s: %s\n", c.ID, c.Result)
		}
	}
	if !cmd.Bool("json") {
		fmt.Printf("transfer: %s transferred to %s in %s (%.0f msg/s), %d left here\n",
			plural(moved, "message"), cmd.String("to"), elapsed.Round(time.Millisecond), float64(moved)/max(elapsed.Seconds(), 1e-3), left)
	}
	if left > 0 && !all {
		return fmt.Errorf("queue transfer: %d of %d messages not transferred", left, len(changes))
	}
	return nil
}

func queueDrain(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return errors.New("queue drain: takes no message IDs (see queue transfer)")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	d, err := a.Drain(ctx, cmd.String("to"))
	if err != nil {
		return fmt.Errorf("queue drain: %w", err)
	}
	if cmd.Bool("json") {
		return printQueueJSON(d)
	}
	fmt.Println(d.Result)
	return nil
}
