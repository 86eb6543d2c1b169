// Package device is the parts of a guest's machine: each a Device holding
// the QEMU arguments and the kernel arguments it needs, which travel
// together (as vimto's devices do), and Join, which gathers a machine's.
// It knows QEMU's and the kernel's command lines, nothing of cells,
// boots or the module under test.
package device

import (
	"fmt"
	"strconv"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/kernels"
)

// A Device is a part of the guest's machine with the QEMU arguments and
// the kernel arguments it needs, which travel together (as vimto's
// devices do): adding one can never leave out the other half.
type Device struct {
	qemu, kernel []string
}

// SerialConsole is the arch's serial console, on which the harness reads
// the kernel's log: no chatter below warnings (WARNING: splats stay
// visible), printk timestamps, and every /dev/kmsg record let through
// (printk.devkmsg=on: the guest suite writes its test markers there, and
// by default it lets 10 records through per 5 s and drops the rest).
func SerialConsole(a arch.Arch) Device {
	return Device{kernel: []string{"console=" + a.Console, "loglevel=5", "printk.time=1", "printk.devkmsg=on"}}
}

// ExitOnPanic ends QEMU at once when the kernel panics, instead of at the
// timeout: panic=-1 reboots, -no-reboot turns the reboot into an exit. An
// Oops panics too: it kills only the thread in the module, and the guest's
// other threads would wait for it until the timeout.
func ExitOnPanic() Device {
	return Device{qemu: []string{"-no-reboot"}, kernel: []string{"panic=-1", "oops=panic"}}
}

// QuietCrypto skips the self-tests of every crypto algorithm the kernel
// registers, which nothing here uses: a part of every boot under TCG
// (BENCHMARKS.md, "Why the machines are so").
func QuietCrypto() Device { return Device{kernel: []string{"cryptomgr.notests"}} }

// Accel runs the guest under "kvm" or "tcg"; oneThread runs every
// vCPU of a TCG guest in one host thread (see OneTCGThread).
func Accel(name string, oneThread bool) Device {
	if name == "tcg" && oneThread {
		return QEMUOnly("-accel", "tcg,thread=single")
	}
	return QEMUOnly("-accel", name)
}

// OneTCGThread says whether a guest with n CPUs must run them in one TCG
// thread. An x86 kernel with jump labels patches its own code while it
// runs (text_poke_bp: an int3 first, the other CPUs synchronised by IPI),
// and QEMU 7.2's multi-threaded TCG can run a stale translation of the
// int3 on another vCPU after the patch is done: "Oops: int3", a panic.
// Seen at boot with two CPUs on 6.12-amd64, in sched_clock_cpu, then
// with tsc=unstable (the first workaround) in enqueue_timer (how often:
// BENCHMARKS.md, "Why the machines are so"): any static key can flip, at
// boot or in a test (cgroups flip some), so
// every vCPU runs in one host thread, taking turns, and none runs while
// another patches. The kernels built here have no jump labels
// (allnoconfig) and keep a thread per vCPU.
func OneTCGThread(a arch.Arch, jumpLabels bool, n int) bool {
	return n >= 2 && a.Name == "amd64" && jumpLabels
}

// CPUs gives the guest n CPUs.
func CPUs(n int) Device { return QEMUOnly("-smp", strconv.Itoa(max(n, 1))) }

// GDBStub starts QEMU halted with its gdb stub on port; the kernel boots
// without KASLR, so that the addresses of `file vmlinux` are the running
// kernel's on every cell.
func GDBStub(port int) Device {
	return Device{qemu: []string{"-gdb", fmt.Sprintf("tcp:127.0.0.1:%d", port), "-S"}, kernel: []string{"nokaslr"}}
}

// ShareTag is the 9p mount tag of the shared directory.
const ShareTag = "kmmap-share"

// Share9p exports host directory dir to the guest over virtio 9p as tag,
// read-write; files the guest's root creates belong to the user running
// QEMU (security_model=none), and files from several host file systems
// keep distinct inode numbers (multidevs=remap).
//
// On s390x the device is a CCW one: -virtfs makes it PCI there (zPCI),
// which QEMU 7.2 cannot migrate, so the guest could never save its
// snapshot.
func Share9p(a arch.Arch, dir, tag string) Device {
	fsdev := fmt.Sprintf("local,path=%s,security_model=none,multidevs=remap,id=%s", dir, tag)
	if a.Name == "s390x" {
		return QEMUOnly("-fsdev", fsdev, "-device", fmt.Sprintf("virtio-9p-ccw,fsdev=%s,mount_tag=%s", tag, tag))
	}
	return QEMUOnly("-virtfs", fmt.Sprintf("local,path=%s,mount_tag=%s,security_model=none,multidevs=remap,id=%s", dir, tag, tag))
}

// ShareModules are the kernel's own modules a 9p share needs: none where
// 9p is built in, 9p and 9pnet_virtio (with their dependencies) where
// they are modules; an error where the kernel has no 9p.
func ShareModules(id string, c kernels.Config) ([]string, error) {
	var mods []string
	for _, m := range []struct{ opt, mod string }{{"CONFIG_9P_FS", "9p"}, {"CONFIG_NET_9P_VIRTIO", "9pnet_virtio"}} {
		switch c.Value(m.opt) {
		case "y":
		case "m":
			mods = append(mods, m.mod)
		default:
			return nil, fmt.Errorf("kernel %s has no %s: it cannot mount the shared directory over virtio 9p (build it with %s=y or =m)", id, m.opt, m.opt)
		}
	}
	return mods, nil
}

// KernelOnly is kernel arguments that need no QEMU argument.
func KernelOnly(args ...string) Device { return Device{kernel: args} }

// QEMUOnly is QEMU arguments that need no kernel argument.
func QEMUOnly(args ...string) Device { return Device{qemu: args} }

// Join gathers the devices' QEMU and kernel arguments, in order.
func Join(devs []Device) (qemu, kernel []string) {
	for _, d := range devs {
		qemu = append(qemu, d.qemu...)
		kernel = append(kernel, d.kernel...)
	}
	return qemu, kernel
}
