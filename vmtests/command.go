package vmtests

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/console"
)

// The exit statuses of a command run in a cell (kmmap run) when it did
// not simply end: the command's own status otherwise.
const (
	// ExitSplat: the kernel reported a problem (WARNING, BUG, KASAN, ...)
	// while the command ran, or outside it; the command itself may have
	// exited 0.
	ExitSplat = 100
	// ExitPanic: the kernel panicked; the guest ended at once.
	ExitPanic = 101
	// ExitTimeout: the run did not end within its timeout.
	ExitTimeout = 102
	// ExitHarness: the command never ran (the module did not build, the
	// guest did not boot, the command could not start).
	ExitHarness = 103
)

// CommandResult is how a command run in a cell ended.
type CommandResult struct {
	Cell string
	// Status is the command's own exit status (128+N when killed by
	// signal N), -1 when it never ran.
	Status int
	// Reports are the kernel's reports during the run, Kinds their kinds.
	Reports []string
	Kinds   string
	// Panicked, TimedOut: how the guest ended, if not by powering off.
	Panicked, TimedOut bool
	// Problems says why the command never ran, or what else went wrong.
	Problems []string
	// Tail is the console's last lines for a hang, from the panic on for
	// a panic.
	Tail    string
	Elapsed time.Duration
	// Mode is how the guest started, Booted the same for a person with
	// why it booted cold; Notes what a person should know about it.
	Mode   BootMode
	Booted string
	Notes  []string
	// Results is the cell's results directory; Rerun runs it again.
	Results, Rerun string
}

// ExitCode is the status kmmap run exits with for r: the command's own
// when the run was clean, else ExitSplat, ExitPanic, ExitTimeout or
// ExitHarness.
func (r CommandResult) ExitCode() int {
	switch {
	case r.TimedOut:
		return ExitTimeout
	case r.Panicked:
		return ExitPanic
	case len(r.Reports) > 0:
		return ExitSplat
	case r.Status < 0 || len(r.Problems) > 0:
		return ExitHarness
	}
	return r.Status
}

// Verdict is r in a few words: the exit status, the kind of report if
// any, how long.
func (r CommandResult) Verdict() string {
	var what string
	switch {
	case r.TimedOut:
		what = "timed out"
	case r.Panicked:
		what = "kernel panic (" + r.Kinds + ")"
	case r.Status < 0:
		what = "did not run"
	default:
		what = fmt.Sprintf("exit %d", r.Status)
		if len(r.Reports) > 0 {
			what += ", kernel " + r.Kinds
		}
	}
	return fmt.Sprintf("%-18s %-36s %6.1fs", r.Cell, what, r.Elapsed.Seconds())
}

// RunCommand boots c with command j, streams the command's output to
// j.Stdout and j.Stderr, and says how it ended.
func RunCommand(ctx context.Context, c *Cell, j CommandJob) CommandResult {
	r := boot(ctx, c, j)
	res := CommandResult{Cell: c.ID, Status: -1, Elapsed: r.elapsed, Results: c.Results, Rerun: c.runRerun(j, r.mode), Mode: r.mode, Booted: c.bootedHow(r), Notes: r.notes}
	if err := c.writeResults(r); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("keeping the results: %v", err))
	}
	if r.res.ran {
		res.Status = r.res.runStatus
		if r.res.runErr != "" && res.Status < 0 {
			res.Problems = append(res.Problems, "the command could not start: "+r.res.runErr)
		}
	}
	for _, key := range []string{event.RunMarker, ""} {
		res.Reports = append(res.Reports, r.con.Splats[key]...)
	}
	res.Kinds = console.KindsOf(res.Reports)
	res.Panicked = strings.Contains(strings.Join(res.Reports, "\n"), "Kernel panic")
	for i, rep := range res.Reports {
		res.Reports[i] = c.withSources(rep)
	}
	res.TimedOut = r.timedOut()
	if res.Panicked || res.TimedOut || !r.res.ran {
		res.Tail = r.con.Tail(30)
	}
	if res.Panicked {
		res.Tail = r.con.From("Kernel panic")
	}
	if !r.res.ran && !res.Panicked && !res.TimedOut {
		for _, p := range c.problems(r) {
			if !strings.HasPrefix(p, "the guest never listed its tests") && !strings.HasPrefix(p, "kernel splat") {
				res.Problems = append(res.Problems, p)
			}
		}
		if len(res.Problems) == 0 {
			res.Problems = append(res.Problems, "the guest ended before the command did; last console lines:\n"+r.con.Tail(30))
		}
	}
	return res
}

// runRerun is the command line that runs command j on the cell again,
// booted as mode.
func (c *Cell) runRerun(j CommandJob, mode BootMode) string {
	var env []string
	if c.cfg != nil {
		env = c.cfg.rerunEnv(mode)
	}
	// go tool, not go run: go run turns every status but 0 into 1.
	args := []string{"go", "tool", "kmmap", "run"} // in the kmmap checkout
	if c.noModule {
		args = append(args, "--no-module")
	}
	if j.Dir != "" {
		args = append(args, "--dir", shellQuote(j.Dir))
	}
	args = append(args, c.ID, "--")
	for _, a := range j.Argv {
		args = append(args, shellQuote(a))
	}
	return strings.Join(append(env, args...), " ")
}
