package vmtests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/vm"
	"github.com/kmmap/kmmap/kernels"
)

// printkTime matches a console line's printk timestamp (printk.time=1).
var printkTime = regexp.MustCompile(`^\[\s*(\d+\.\d+)\]`)

// bootVM runs the cell's VM once, as p says (cold, saving a snapshot at
// the ready point, or restoring one), with w's job, to the end (or until
// ctx is done) and returns what it printed and sent. With the
// configuration's Trace, each guest agent event and the start of each
// top-level guest test are printed with their time since QEMU started. A
// shell job's console is also this terminal's (vm.Terminal).
func bootVM(ctx context.Context, cell *Cell, p *plan, w work) run {
	var mu sync.Mutex
	con, res := console.New(cell.moduleName, cell.allow), newResults()
	r := run{con: con, res: res, timeout: w.timeout}
	trace := cell.cfg != nil && cell.cfg.Trace
	ctx, kill := context.WithCancel(ctx)
	defer kill()
	// release: the guest runs and may take its job (after the snapshot
	// is saved, or once the restored guest runs); ready: the agent waits
	// for it (the snapshot point); took: the agent has it.
	release, ready, took := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var readyOnce, tookOnce sync.Once
	// update is the one way to change r while QEMU runs: every goroutine
	// of the boot (the console's, the events', the snapshot's task, the
	// watchdog's) goes through it, under mu.
	update := func(f func(*run)) {
		mu.Lock()
		defer mu.Unlock()
		f(&r)
	}
	port, err := cell.modulePort(w.job, release, took, func(err error) {
		update(func(r *run) { r.jobUnread = err })
		kill()
	})
	if err != nil {
		r.err = err
		return r
	}
	snap, err := cell.snapshotDevice(p, vmHooks{release: release, ready: ready, took: took, kill: kill, update: update})
	if err != nil {
		r.err = err
		return r
	}
	if p.mode == Restored {
		if err := replayBoot(con, cell.snap.store, p.key); err != nil {
			r.err = err
			return r
		}
	}
	var term *vm.Terminal
	if w.shell != nil {
		term = &vm.Terminal{Stdin: w.shell.Stdin, Stdout: w.shell.Stdout}
	}
	start := time.Now()
	machine := vm.Machine{Arch: cell.Arch.QEMUArch, Command: cell.qemuCommand(), Kernel: cell.Image, Initramfs: cell.Initramfs,
		KernelArgs: cell.KernelArgs, QEMUArgs: cell.QEMUArgs, Timeout: w.timeout,
		Devices: []qemu.Fn{port, snap}} // the port after the event channel, which adds the virtio-serial bus
	out := vm.Run(ctx, machine, w.stall, vm.Handlers{
		Line: func(l string) {
			mu.Lock()
			defer mu.Unlock()
			if m := printkTime.FindStringSubmatch(l); m != nil && r.times.KernelStart == 0 && p.mode != Restored {
				ts, _ := strconv.ParseFloat(m[1], 64)
				r.times.KernelStart = max(time.Since(start)-time.Duration(ts*float64(time.Second)), time.Nanosecond)
			}
			con.Add(l)
		},
		Event: func(e event.Event) {
			mu.Lock()
			defer mu.Unlock()
			if trace && (e.Agent != "" || e.Action == "run" && !strings.Contains(e.Test, "/")) {
				fmt.Fprintf(os.Stderr, "%s: %6.2fs %s%s\n", cell.ID, time.Since(start).Seconds(), e.Agent, e.Test)
			}
			switch {
			case e.Agent == event.AgentModules && r.times.AgentUp == 0:
				r.times.AgentUp = time.Since(start)
				r.times.AgentStart = r.times.AgentUp
				if e.Uptime > 0 && r.times.KernelStart > 0 {
					r.times.AgentStart = min(r.times.KernelStart+time.Duration(e.Uptime*float64(time.Second)), r.times.AgentUp)
				}
				readyOnce.Do(func() { close(ready) })
			case e.Agent == event.AgentJob:
				r.jobSeen = true
				if p.mode == Restored {
					r.times.AgentStart, r.times.AgentUp = time.Since(start), time.Since(start)
				}
				tookOnce.Do(func() { close(took) })
			case e.Action == "run" && r.times.TestsStart == 0:
				r.times.TestsStart = time.Since(start)
			case e.Agent == event.AgentExit:
				r.times.TestsDone = time.Since(start)
			case e.Action == "output":
				r.benchOut.WriteString(e.Output)
			case e.Agent == event.AgentStdout && w.stdout != nil:
				w.stdout.Write([]byte(e.Output))
			case e.Agent == event.AgentStderr && w.stderr != nil:
				w.stderr.Write([]byte(e.Output))
			case w.shell != nil && (e.Agent == event.AgentError || e.Agent == event.AgentKmod && e.Error != ""):
				shellNote(w.shell.Stdout, "guest agent: %s", e.Error)
			}
			if e.Agent == event.AgentModule && cell.GDB != 0 {
				if w.shell != nil {
					shellNote(w.shell.Stdout, "%s", cell.gdbSymbols(e.Sections))
				} else {
					fmt.Fprintf(os.Stderr, "%s: %s\n", cell.ID, cell.gdbSymbols(e.Sections))
				}
			}
			r.res.handle(e)
		},
		Tail: func() string { mu.Lock(); defer mu.Unlock(); return con.Tail(20) },
		Started: func() {
			switch {
			case cell.GDB != 0 && w.shell != nil:
				shellNote(w.shell.Stdout, "%s", cell.gdbAttach())
			case cell.GDB != 0:
				fmt.Fprintf(os.Stderr, "%s: %s\n", cell.ID, cell.gdbAttach())
			}
		},
	}, term)
	mu.Lock()
	defer mu.Unlock()
	con.Finish()
	r.err, r.stalled = out.Err, out.Stalled
	r.elapsed = out.Elapsed
	r.times.Exited = r.elapsed
	r.qemuCmdline = out.Cmdline
	if p.mode == Restored {
		r.restoredFrom = fmt.Sprintf("# restored from the snapshot %s (its RAM in the memory backend, the rest through -incoming); KMMAP_SNAPSHOT=0 boots cold\n", cell.snap.store.State(p.key))
	}
	return r
}

// qemuCommand is the QEMU vmtest starts for c: behind setpriv, which
// ties it to this process (lifeline), so that no guest outlives the test
// that booted it, however that test ends.
func (c *Cell) qemuCommand() string {
	return strings.Join(append(append(append([]string(nil), c.lifeline...), c.Arch.QEMU), c.Arch.Machine...), " ")
}

// problems says what went wrong with a boot as a whole, apart from the
// guest tests' own results, each with what a person needs to see.
func (c *Cell) problems(r run) []string {
	var out []string
	con, res := r.con, r.res
	panicked := len(con.Splats[""]) > 0 && strings.Contains(strings.Join(con.Splats[""], "\n"), "Kernel panic")
	switch {
	case r.jobUnread != nil:
		out = append(out, fmt.Sprintf("%v: the harness ended it; last console lines:\n%s", r.jobUnread, con.Tail(20)))
	case r.stalled != "":
		out = append(out, r.stalled)
	case r.timedOut():
		out = append(out, fmt.Sprintf("guest did not power off within %s (raise KMMAP_VM_TIMEOUT if the machine is just slow); last console lines:\n%s", r.timeout, con.Tail(20)))
	case !panicked && con.Contains("reboot: Restarting system"):
		out = append(out, fmt.Sprintf("the guest rebooted instead of powering off; last console lines:\n%s", con.Tail(20)))
	case r.err != nil:
		out = append(out, fmt.Sprintf("QEMU: %v; last console lines:\n%s", r.err, con.Tail(20)))
	}
	for _, e := range res.agentErrs {
		out = append(out, "guest agent: "+e)
	}
	if _, err := c.Module(); err != nil && c.kmod != nil {
		out = append(out, fmt.Sprintf("the module under test was not built, so the guest could not load it: %v", err))
	} else if res.kmodErr != "" {
		out = append(out, fmt.Sprintf("loading the module under test in the guest failed: %s", res.kmodErr))
	}
	if s := con.Splats[""]; len(s) > 0 {
		out = append(out, fmt.Sprintf("kernel splat (%s) outside any test:\n%s", console.KindsOf(s), c.withSources(strings.Join(s, "\n"))))
	}
	if len(res.list) == 0 {
		out = append(out, "the guest never listed its tests, so none ran; last console lines:\n"+con.Tail(30))
	}
	return out
}

// writeResults keeps what a person needs to look into a run: the whole
// console, the kernel command line, the QEMU command line and the module
// under test, beside the initramfs.
func (c *Cell) writeResults(r run) error {
	files := map[string]string{
		"console.log": strings.Join(r.con.Lines, "\n") + "\n",
		"cmdline":     strings.Join(c.KernelArgs, " ") + "\n",
		"qemu":        r.qemuCmdline + "\n" + r.restoredFrom,
		"kernel":      c.Image + "\n",
	}
	if ko, err := c.Module(); err == nil {
		// the module the guest received over its port, not in the initramfs
		b, err := os.ReadFile(ko)
		if err != nil {
			return err
		}
		name := filepath.Base(ko)
		if mod, err := kernels.ModInfo(ko, "name"); err == nil && mod != "" {
			name = mod + ".ko"
		}
		files[name] = string(b)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(c.Results, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
