package main

import (
	"context"
	"log"
	"os"

	"github.com/kmmap/kmmap/vmtests"
)

// shell boots cell with the module loaded and an interactive shell on this
// terminal.
func shell(ctx context.Context, cell string) error {
	h, err := harness()
	if err != nil {
		return err
	}
	f, err := h.Fetcher(log.Printf)
	if err != nil {
		return err
	}
	tree, err := h.Tree(ctx, cell, f)
	if err != nil {
		return err
	}
	c, err := h.Prepare(ctx, f, tree, vmtests.CellOptions{Logf: log.Printf, Shell: true})
	if err != nil {
		return err
	}
	log.Printf("%s: booting %s (QEMU %s); leave the shell to power off, or press Ctrl-A x to stop QEMU", cell, tree.Kernel.Release, c.Accel)
	return vmtests.Shell(ctx, c, os.Stdin, os.Stdout)
}
