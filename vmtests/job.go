package vmtests

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kmmap/kmmap/initramfs/event"
)

// A Job is what a prepared cell's guest does once it is up with the
// module loaded: SuiteJob (the guest test package), CommandJob (a program,
// as kmmap run runs it), BenchJob (the suite's benchmarks) or ShellJob (a
// shell on a terminal). Every entry point (Harness.Test, RunCommand,
// GuestBench, Measure, Shell, Judge) boots a cell through the one
// function that takes a job (boot). A job is sent to the guest after the
// snapshot point, so every job on a cell restores the same snapshot, and
// nothing of the job is in the Cell: a Cell does not change after Prepare.
type Job interface{ isJob() }

// SuiteJob runs the guest test package; the zero SuiteJob runs all of it.
type SuiteJob struct {
	// Run is the suite's -test.run pattern ("" runs it all).
	Run string
	// Count runs each test this many times in one boot (-test.count),
	// for a race that shows only now and then.
	Count int
	// FailFast stops the suite at its first failing test
	// (-test.failfast): a mutant needs one.
	FailFast bool
	// Timeout bounds the VM (0: the cell's, from KMMAP_VM_TIMEOUT); the
	// suite gets a -test.timeout a little under it.
	Timeout time.Duration
}

// CommandJob runs Argv in the guest, in Dir, with Env added to its
// environment; its output is streamed to Stdout and Stderr as the guest
// sends it (nil: dropped). Timeout bounds the VM (0: the cell's).
type CommandJob struct {
	Argv           []string
	Dir            string
	Env            []string
	Stdout, Stderr io.Writer
	Timeout        time.Duration
}

// BenchJob runs the suite's benchmarks matching Pattern instead of its
// tests, for Time (a -test.benchtime value) each.
type BenchJob struct {
	Pattern, Time string
}

// ShellJob runs an interactive shell in Dir on the guest's console,
// connected to Stdin (made raw when it is a terminal) and Stdout. It has
// no time limit and no watchdog.
type ShellJob struct {
	Stdin  *os.File
	Stdout io.Writer
	Dir    string
}

func (SuiteJob) isJob()   {}
func (CommandJob) isJob() {}
func (BenchJob) isJob()   {}
func (ShellJob) isJob()   {}

// work is a job as one boot of a cell runs it: what the guest is sent,
// the VM's time limit, the watchdog's, and where the guest's output goes.
type work struct {
	job            event.Job
	timeout, stall time.Duration
	stdout, stderr io.Writer // a command's output
	shell          *ShellJob
}

// work is what c's guest is sent for j, and how the host runs it.
func (c *Cell) work(j Job) (work, error) {
	w := work{job: c.base, timeout: c.Timeout}
	w.job.TestArgs = append([]string(nil), c.base.TestArgs...)
	w.stall = c.stall(j)
	switch j := j.(type) {
	case SuiteJob:
		if j.Timeout > 0 {
			w.timeout = j.Timeout
		}
		if j.Run != "" {
			w.job.TestArgs = append(w.job.TestArgs, "-test.run="+j.Run)
		}
		if j.FailFast {
			w.job.TestArgs = append(w.job.TestArgs, "-test.failfast")
		}
		if j.Count > 1 {
			w.job.TestArgs = append(w.job.TestArgs, fmt.Sprintf("-test.count=%d", j.Count))
		}
	case CommandJob:
		if len(j.Argv) == 0 {
			return w, fmt.Errorf("%s: a command job with no command", c.ID)
		}
		w.job.Run, w.job.RunDir, w.job.RunEnv = j.Argv, j.Dir, j.Env
		w.stdout, w.stderr = j.Stdout, j.Stderr
		if j.Timeout > 0 {
			w.timeout = j.Timeout
		}
	case BenchJob:
		w.job.Bench, w.job.BenchTime = j.Pattern, j.Time
	case ShellJob:
		if j.Stdin == nil || j.Stdout == nil {
			return w, fmt.Errorf("%s: a shell job needs Stdin and Stdout", c.ID)
		}
		w.job.Shell, w.job.RunDir = true, j.Dir
		w.timeout = 0
		w.shell = &j
	default:
		return w, fmt.Errorf("%s: unknown job %T", c.ID, j)
	}
	if w.timeout > 0 {
		w.job.TestArgs = append(w.job.TestArgs, "-test.timeout="+guestTimeout(w.timeout).String())
	}
	return w, nil
}

// defaultStall is how long a guest running the suite may make no
// progress before the watchdog fails it (Config.Stall).
const defaultStall = 3 * time.Minute

// stall is how long c's guest may go without a console line or an event
// before the watchdog fails it; 0: no watchdog (a gdb session, a shell,
// a command of kmmap run unless KMMAP_STALL is set: it may be silent for
// as long as it likes).
func (c *Cell) stall(j Job) time.Duration {
	var d time.Duration
	if c.cfg != nil {
		d = c.cfg.Stall
	}
	_, command := j.(CommandJob)
	_, shell := j.(ShellJob)
	switch {
	case d < 0 || c.GDB != 0 || shell:
		return 0
	case d > 0:
		return d
	case command:
		return 0
	}
	return defaultStall
}

// guestTimeout is the guest suite's -test.timeout for a VM timeout d: a
// little under it, so that a hung guest test ends with Go's panic naming
// it and every goroutine's stack, not with QEMU killed at the timeout.
func guestTimeout(d time.Duration) time.Duration {
	return d - max(d/10, min(30*time.Second, d/2))
}
