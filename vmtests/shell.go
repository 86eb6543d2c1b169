package vmtests

import (
	"context"
)

// Shell boots c and connects the guest's console to this terminal, a
// shell running in j.Dir with the module loaded; it returns when the guest
// powers off (leave the shell) or QEMU is stopped (Ctrl-A x). It boots as
// every job does, but cold, with no time limit and no watchdog; the
// session's console is kept with the cell's results.
func Shell(ctx context.Context, c *Cell, j ShellJob) error {
	r := boot(ctx, c, j)
	if err := c.writeResults(r); err != nil {
		shellNote(j.Stdout, "keeping the results: %v", err)
	}
	return r.err
}
