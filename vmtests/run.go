package vmtests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/hugelgupf/vmtest/qemu/qevent"
	"github.com/kmmap/kmmap/initramfs/event"
)

// run is one finished boot of a cell: what the console showed, what the
// guest sent, how long QEMU ran and how it ended.
type run struct {
	con     *console
	res     *results
	elapsed time.Duration
	err     error
	// qemuCmdline is QEMU's command line, quoted for a shell.
	qemuCmdline string
}

// boot runs the cell's VM to the end and returns what it printed and sent.
func boot(cell *Cell) run {
	var mu sync.Mutex
	con, res := newConsole(), newResults()
	vm, err := qemu.Start(cell.Machine.QEMUArch,
		qemu.WithQEMUCommand(cell.Machine.QEMU+" "+strings.Join(cell.Machine.Args, " ")),
		qemu.WithKernel(cell.Tree.Vmlinuz),
		qemu.WithInitramfs(cell.Initramfs),
		qemu.WithAppendKernel(cell.KernelArgs...),
		qemu.ArbitraryArgs(cell.qemuArgs()...),
		qemu.WithVMTimeout(cell.Timeout),
		qemu.LogSerialByLine(func(l string) {
			mu.Lock()
			defer mu.Unlock()
			con.add(l)
		}),
		qevent.EventChannelCallback(event.Channel, func(e event.Event) {
			mu.Lock()
			defer mu.Unlock()
			if e.Agent == event.AgentModule && cell.GDB != 0 {
				fmt.Fprintf(os.Stderr, "%s: %s\n", cell.ID, cell.gdbSymbols(e.Sections))
			}
			res.handle(e)
		}),
	)
	if err != nil {
		return run{con: con, res: res, err: fmt.Errorf("start %s: %w", cell.Machine.QEMU, err)}
	}
	if cell.GDB != 0 {
		fmt.Fprintf(os.Stderr, "%s: %s\n", cell.ID, cell.gdbAttach())
	}
	start := time.Now()
	err = vm.Wait()
	con.finish()
	return run{con: con, res: res, elapsed: time.Since(start), err: err, qemuCmdline: vm.CmdlineQuoted()}
}

// problems says what went wrong with a boot as a whole, apart from the
// guest tests' own results, each with what a person needs to see.
func (c *Cell) problems(r run) []string {
	var out []string
	con, res := r.con, r.res
	panicked := len(con.splats[""]) > 0 && strings.Contains(strings.Join(con.splats[""], "\n"), "Kernel panic")
	switch {
	case c.Timeout > 0 && r.elapsed >= c.Timeout:
		out = append(out, fmt.Sprintf("guest did not power off within %s (raise KMMAP_VM_TIMEOUT if the machine is just slow); last console lines:\n%s", c.Timeout, con.tail(20)))
	case !panicked && con.contains("reboot: Restarting system"):
		out = append(out, fmt.Sprintf("the guest rebooted instead of powering off; last console lines:\n%s", con.tail(20)))
	case r.err != nil:
		out = append(out, fmt.Sprintf("QEMU: %v; last console lines:\n%s", r.err, con.tail(20)))
	}
	for _, e := range res.agentErrs {
		out = append(out, "guest agent: "+e)
	}
	if res.kmodErr != "" {
		out = append(out, fmt.Sprintf("loading %s in the guest failed: %s", filepath.Base(c.Kmod), res.kmodErr))
	}
	if s := con.splats[""]; len(s) > 0 {
		out = append(out, "kernel splat outside any test:\n"+strings.Join(s, "\n"))
	}
	if len(res.list) == 0 {
		out = append(out, "the guest never listed its tests, so none ran; last console lines:\n"+con.tail(30))
	}
	return out
}
