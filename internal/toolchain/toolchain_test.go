package toolchain

import (
	"runtime"
	"slices"
	"testing"

	"github.com/kmmap/kmmap/kernels"
)

func TestBaseSuite(t *testing.T) {
	for in, want := range map[string]string{"trixie-backports": "trixie", "bookworm": "bookworm", "bullseye-updates": "bullseye"} {
		if got := BaseSuite(in); got != want {
			t.Errorf("BaseSuite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPackagesHoldCompilerAndCross(t *testing.T) {
	pkgs := packages("gcc-14")
	for _, want := range []string{"gcc-14", "make", "dwarves", "libelf-dev"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("packages(gcc-14) lacks %s: %v", want, pkgs)
		}
	}
	cross := "gcc-14-aarch64-linux-gnu"
	if runtime.GOARCH == "arm64" {
		cross = "gcc-14-x86-64-linux-gnu"
	}
	if !slices.Contains(pkgs, cross) {
		t.Errorf("packages(gcc-14) lacks the cross compiler %s: %v", cross, pkgs)
	}
}

func TestNeedsRoot(t *testing.T) {
	host := HostSuite()
	if NeedsRoot(kernels.Kernel{ID: "custom"}) {
		t.Error("a custom kernel (no suite) must build with the host's tools")
	}
	if host != "" && NeedsRoot(kernels.Kernel{Suite: host}) {
		t.Errorf("a %s kernel on a %s host needs no root", host, host)
	}
	if !NeedsRoot(kernels.Kernel{Suite: "nonesuch-backports"}) {
		t.Error("a kernel from another suite must build in its suite's root")
	}
}
