package device

import (
	"slices"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/arch"
)

// Each device brings the kernel arguments its QEMU arguments need.
func TestDevicesPairArguments(t *testing.T) {
	q, k := Join([]Device{GDBStub(1234)})
	if !slices.Contains(q, "-S") || !slices.Contains(k, "nokaslr") {
		t.Errorf("gdb stub: QEMU %q, kernel %q; want -S with nokaslr", q, k)
	}
	q, k = Join([]Device{ExitOnPanic()})
	if !slices.Contains(q, "-no-reboot") || !slices.Contains(k, "panic=-1") {
		t.Errorf("exit on panic: QEMU %q, kernel %q; want -no-reboot with panic=-1", q, k)
	}
}

// An x86 guest with jump labels and several CPUs runs them in one TCG
// thread (a stale int3 of its code patching panicked it otherwise); with
// one CPU, on arm64, without jump labels or under KVM, nothing changes.
func TestOneTCGThreadForSelfPatchingSMP(t *testing.T) {
	amd, err := arch.Lookup("amd64")
	if err != nil {
		t.Fatal(err)
	}
	arm, err := arch.Lookup("arm64")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		a          arch.Arch
		accel      string
		jumpLabels bool
		n          int
		want       string
	}{
		{amd, "tcg", true, 2, "tcg,thread=single"},
		{amd, "tcg", true, 8, "tcg,thread=single"},
		{amd, "tcg", true, 1, "tcg"},
		{amd, "tcg", false, 2, "tcg"},
		{amd, "kvm", true, 2, "kvm"},
		{arm, "tcg", true, 2, "tcg"},
	} {
		q, _ := Join([]Device{Accel(c.accel, OneTCGThread(c.a, c.jumpLabels, c.n))})
		if got := strings.Join(q, " "); got != "-accel "+c.want {
			t.Errorf("%s, %s, jump labels %v, %d CPUs: %q, want -accel %s", c.a.Name, c.accel, c.jumpLabels, c.n, got, c.want)
		}
	}
}
