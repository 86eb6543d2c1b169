package vmtests

import (
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/console"
)

// Timeline splits a boot: QEMU's own start (process, firmware, loading the
// kernel) until the kernel began, estimated from the first console line's
// printk timestamp; the kernel's boot until init started the guest agent
// (from the uptime the agent reports); the agent loading the kernel's
// virtio modules and opening its channel; its work until the first guest
// test started (loading the module under test, listing the tests,
// starting the test binary); the tests until the test binary exited; and
// power-off until QEMU exited.
//
// A guest restored from a snapshot has no boot: KernelStart is when QEMU
// had loaded the saved state and the guest ran, AgentStart and AgentUp
// when the agent took its job. Save is how long saving the guest took in
// the run that saved it (the guest stood still meanwhile: the stages
// after it include it). Mode is the run's: Saved for the run that saved
// the snapshot (its job ran in the guest restored from it).
type Timeline struct {
	Mode                                                            BootMode
	KernelStart, AgentStart, AgentUp, TestsStart, TestsDone, Exited time.Duration
	Save                                                            time.Duration
}

// The stages' durations.
func (t Timeline) QEMUStart() time.Duration { return t.KernelStart }

func (t Timeline) KernelBoot() time.Duration { return t.AgentStart - t.KernelStart }

func (t Timeline) GuestModules() time.Duration { return t.AgentUp - t.AgentStart }

func (t Timeline) Agent() time.Duration { return t.TestsStart - t.AgentUp }

func (t Timeline) Tests() time.Duration { return t.TestsDone - t.TestsStart }

func (t Timeline) PowerOff() time.Duration { return t.Exited - t.TestsDone }

// run is one finished boot of a cell: what the console showed, what the
// guest sent, how long QEMU ran and how it ended.
type run struct {
	con     *console.Console
	res     *results
	elapsed time.Duration
	err     error
	// qemuCmdline is QEMU's command line, quoted for a shell.
	qemuCmdline string
	// times are when, after QEMU was started, the run reached each stage.
	times Timeline
	// benchOut is the guest's output in benchmark mode.
	benchOut strings.Builder
	// jobSeen: the agent took its job (a restored guest is alive);
	// saved: this boot saved its snapshot and ended.
	jobSeen, saved bool
	// jobUnread: the guest took its job and stopped reading the rest of
	// it (a restored guest that hung); the VM was ended.
	jobUnread error
	// mode is how the guest started: restored, booted cold and saved,
	// or booted cold.
	mode BootMode
	// restoredFrom says, for the results' qemu file, which snapshot the
	// restored guest came from ("" for a boot).
	restoredFrom string
	// notes are what a person should know about how the guest started
	// (a snapshot that did not restore, or could not be saved).
	notes []string
	// timeout was the VM's time limit (0: none).
	timeout time.Duration
	// stalled is what the watchdog saw when it ended a guest that made
	// no progress ("" if it did not).
	stalled string
}

// timedOut reports whether the run was ended by its time limit.
func (r run) timedOut() bool { return r.timeout > 0 && r.elapsed >= r.timeout }
