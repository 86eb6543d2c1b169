package main

import (
	"context"
	"log"
	"os"
	"path/filepath"

	"github.com/kmmap/kmmap/vmtests"
)

// shell boots cell with the module loaded and an interactive shell on this
// terminal, the working directory shared with the guest at the same path.
func shell(ctx context.Context, cell, dir string) error {
	h, err := harness()
	if err != nil {
		return err
	}
	steps := newStepLog(false)
	defer steps.close()
	f, err := h.Fetcher(steps.logf)
	if err != nil {
		return err
	}
	tree, err := h.Tree(ctx, cell, f)
	if err != nil {
		return err
	}
	wd := dir
	if wd == "" {
		wd, err = os.Getwd()
	}
	if err == nil {
		wd, err = filepath.Abs(wd)
	}
	if err != nil {
		return err
	}
	c, err := h.Prepare(ctx, f, tree, vmtests.CellOptions{Logf: steps.logf, Share: wd, ResultsID: "shell/" + tree.Kernel.ID})
	steps.close()
	if err != nil {
		return err
	}
	log.Printf("%s: booting %s (QEMU %s); leave the shell to power off, or press Ctrl-A x to stop QEMU", cell, tree.Kernel.Release, c.Accel)
	return vmtests.Shell(ctx, c, vmtests.ShellJob{Stdin: os.Stdin, Stdout: os.Stdout, Dir: wd})
}
