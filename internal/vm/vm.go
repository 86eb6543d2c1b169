// Package vm runs one QEMU guest under vmtest to its end: the machine
// (QEMU's command, the kernel, the initramfs, both command lines, the
// devices the caller adds), its serial console a line at a time, the
// guest agent's event channel, a watchdog that ends a guest that makes no
// progress, and, for a shell, this terminal. It returns how QEMU ended. It
// knows nothing of cells, jobs, snapshots or verdicts: the caller's
// devices and handlers do.
package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/watchdog"
	"golang.org/x/term"
)

// Machine is what QEMU starts.
type Machine struct {
	Arch                 qemu.Arch // vmtest's name of the guest's arch
	Command              string    // QEMU's command line up to the machine's arguments
	Kernel, Initramfs    string
	KernelArgs, QEMUArgs []string
	// Timeout bounds the guest's run (0: none).
	Timeout time.Duration
	// Devices are added after the event channel (which adds the
	// virtio-serial bus a port of theirs needs).
	Devices []qemu.Fn
}

// Handlers are what the caller does with the guest's output. Line and
// Event are called from QEMU's goroutines, at the same time as each
// other: the caller keeps what they share under its own lock. Tail gives
// the console's last lines for the watchdog's report.
type Handlers struct {
	Line  func(line string)
	Event func(e event.Event)
	Tail  func() string
	// Started is called once QEMU runs (the gdb stub's address is known).
	Started func()
}

// Terminal connects the guest's console to this process's: its output to
// Stdout as it comes, Stdin (raw when it is a terminal) to its input.
type Terminal struct {
	Stdin  *os.File
	Stdout io.Writer
}

// Result is how a guest's run ended.
type Result struct {
	Err error
	// Stalled is what the watchdog saw when it ended the guest ("" if
	// it did not).
	Stalled string
	Elapsed time.Duration
	// Cmdline is QEMU's command line, quoted for a shell.
	Cmdline string
}

// Run starts m and waits for it to end (or ctx to be done), the watchdog
// ending it after stall without a console line or an event (0: never).
// term, when not nil, is the guest's terminal.
func Run(ctx context.Context, m Machine, stall time.Duration, h Handlers, term *Terminal) Result {
	ctx, kill := context.WithCancel(ctx)
	defer kill()
	wd, err := watchdog.New(stall)
	if err != nil {
		return Result{Err: err}
	}
	defer wd.Close()
	var fns []qemu.Fn
	if term != nil {
		fns = append(fns, qemu.WithSerialOutput(nopCloser{term.Stdout}))
	}
	fns = append(fns,
		qemu.WithQEMUCommand(m.Command),
		qemu.WithKernel(m.Kernel),
		qemu.WithInitramfs(m.Initramfs),
		qemu.WithAppendKernel(m.KernelArgs...),
		qemu.ArbitraryArgs(m.QEMUArgs...),
		qemu.WithVMTimeout(m.Timeout),
		qemu.LogSerialByLine(func(l string) {
			wd.Progress()
			h.Line(l)
		}),
		guestEvents(func(e event.Event) {
			wd.Progress()
			h.Event(e)
		}))
	fns = append(append(fns, m.Devices...), wd.Device())
	start := time.Now()
	v, err := qemu.StartContext(ctx, m.Arch, fns...)
	if err != nil {
		return Result{Err: fmt.Errorf("start %s: %w", m.Command, err)}
	}
	if term != nil {
		restore, err := connect(v, term.Stdin)
		if err != nil {
			kill()
			v.Wait()
			return Result{Err: err, Elapsed: time.Since(start), Cmdline: v.CmdlineQuoted()}
		}
		defer restore()
	}
	if h.Started != nil {
		h.Started()
	}
	var r Result
	waited := make(chan error, 1)
	go func() { waited <- v.Wait() }()
	select {
	case r.Err = <-waited:
	case msg := <-wd.Stalled(ctx, h.Tail):
		kill()
		select {
		case r.Err = <-waited:
		case <-time.After(15 * time.Second):
			msg += "\nvmtest's VM.Wait did not return 15 s after QEMU was killed: the run was abandoned there"
		}
		r.Stalled = msg
	}
	r.Elapsed, r.Cmdline = time.Since(start), v.CmdlineQuoted()
	return r
}

// connect connects stdin to the VM's console (raw, when it is a
// terminal), whose output already goes to the terminal's Stdout; restore
// puts the terminal back.
func connect(v *qemu.VM, stdin *os.File) (restore func(), err error) {
	go io.Copy(io.Discard, v.Console) // the serial output goes to Stdout (WithSerialOutput)
	restore = func() {}
	if term.IsTerminal(int(stdin.Fd())) {
		old, err := term.MakeRaw(int(stdin.Fd()))
		if err != nil {
			return nil, err
		}
		restore = func() { term.Restore(int(stdin.Fd()), old) }
	}
	go io.Copy(v.Console, stdin)
	return restore, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
