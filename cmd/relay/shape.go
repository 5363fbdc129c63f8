package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/urfave/cli/v3"
)

// queueShape is `relay queue shape`.
func queueShape(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return errors.New("queue shape takes no arguments")
	}
	by := cmd.String("by")
	if by != api.ShapeByDomain && by != api.ShapeByHop {
		return fmt.Errorf("queue shape: --by %q: want domain or hop", by)
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	sh, err := a.Shape(ctx, by, cmd.Bool("held"))
	if err != nil {
		return fmt.Errorf("queue shape: %w", err)
	}
	if cmd.Bool("json") {
		return printQueueJSON(sh)
	}
	writeShape(os.Stdout, sh)
	return nil
}

// writeShape prints the shape as qshape does: a TOTAL row, then one row
// per destination, columns T (the row's total) and one per age bucket.
func writeShape(w io.Writer, sh *api.Shape) {
	width := len("TOTAL")
	for _, r := range sh.Rows {
		width = max(width, len(r.Destination))
	}
	width = min(width, 40)
	cols := append([]string{"T"}, sh.Buckets...)
	fmt.Fprintf(w, "%-*s", width, strings.ToUpper(sh.By))
	for _, c := range cols {
		fmt.Fprintf(w, " %8s", c)
	}
	fmt.Fprintln(w)
	for _, r := range append([]api.ShapeRow{sh.Total}, sh.Rows...) {
		fmt.Fprintf(w, "%-*s %8d", width, column(r.Destination, width), r.Total)
		for _, n := range r.Counts {
			fmt.Fprintf(w, " %8d", n)
		}
		fmt.Fprintln(w)
	}
}
