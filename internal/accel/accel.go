// Package accel picks how QEMU runs a guest: KVM only when the guest is
// the host's arch and a real boot under KVM works, else TCG. It boots a
// probe kernel once per harness and caches the verdict per host boot; it
// knows nothing of cells.
package accel

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/arch"
)

// Probe picks how QEMU runs a guest of arch: "kvm" only when the guest
// is the host's arch and a real boot under KVM works, else "tcg"; one
// verdict per Probe (the zero Probe is ready to use). /dev/kvm opening is not enough: on nested hosts
// without virtualisation support it opens, and guests then hang or die
// with an emulation failure.
type Probe struct {
	once   sync.Once
	result string
	why    string
}

// For returns the accelerator for a guest of arch and why: forced (the
// configuration's KMMAP_ACCEL) when not "", else probed; probeKernel is a
// kernel image of the host's arch to try a KVM boot with.
func (a *Probe) For(forced, arch, probeKernel, cacheDir string) (string, string) {
	if forced != "" {
		return forced, "KMMAP_ACCEL"
	}
	if arch != runtime.GOARCH {
		return "tcg", "guest arch differs from the host's"
	}
	a.once.Do(func() { a.result, a.why = probeKVM(probeKernel, cacheDir) })
	return a.result, a.why
}

// probeKVM boots kernel under KVM with no root file system: a working KVM
// reaches the "VFS: Unable to mount root fs" panic in a few seconds and
// QEMU exits (panic=-1, -no-reboot). The verdict is cached per host boot.
func probeKVM(kernel, cacheDir string) (string, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", fmt.Sprintf("/dev/kvm: %v", err)
	}
	f.Close()
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	cached := filepath.Join(cacheDir, "kvm-probe-"+strings.TrimSpace(string(bootID)))
	if b, err := os.ReadFile(cached); err == nil {
		v, why, _ := strings.Cut(string(b), "\n")
		return v, why + " (cached for this host boot)"
	}
	m, err := arch.Host()
	if err != nil {
		return "tcg", err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append(append([]string{}, m.Machine...), "-accel", "kvm", "-nographic", "-no-reboot", "-nic", "none",
		"-kernel", kernel, "-append", "console="+m.Console+" panic=-1")
	out, err := exec.CommandContext(ctx, m.QEMU, args...).CombinedOutput()
	v, why := "tcg", ""
	switch {
	case ctx.Err() != nil:
		why = "a probe boot under KVM hung (no working nested virtualisation?)"
	case err != nil:
		why = fmt.Sprintf("a probe boot under KVM failed: %v: %s", err, lastLine(out))
	case !strings.Contains(string(out), "Kernel panic"):
		why = "a probe boot under KVM did not reach the kernel"
	default:
		v, why = "kvm", "a probe boot under KVM worked"
	}
	_ = os.MkdirAll(cacheDir, 0o755)
	_ = os.WriteFile(cached, []byte(v+"\n"+why), 0o644)
	return v, why
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
