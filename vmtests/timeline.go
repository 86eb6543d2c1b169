package vmtests

import (
	"time"
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
// after it include it).
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
