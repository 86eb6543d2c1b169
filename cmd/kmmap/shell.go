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
	lock, _, root, err := loadLock()
	if err != nil {
		return err
	}
	f, err := vmtests.NewFetcher(log.Printf)
	if err != nil {
		return err
	}
	tree, err := vmtests.TreeFor(ctx, lock, f, cell)
	if err != nil {
		return err
	}
	c, err := vmtests.Prepare(ctx, root, f, tree, vmtests.Options{Logf: log.Printf, Shell: true, GDB: vmtests.WantGDB()})
	if err != nil {
		return err
	}
	log.Printf("%s: booting %s (QEMU %s); leave the shell to power off, or press Ctrl-A x to stop QEMU", cell, tree.Kernel.Release, c.Accel)
	return vmtests.Shell(ctx, c, os.Stdin, os.Stdout)
}
