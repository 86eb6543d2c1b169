package toolchain

import (
	"context"
	"fmt"
	"os"
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

// TestCommandPrivateTmp: commands in one root each see a /tmp of their
// own. Two kernel builds in one root once collided on make's jobserver
// fifo (/tmp/GMfifo1: each make has the same PID in its own PID namespace),
// and make's complaint ended up in the kernel release. The host's / stands
// in for a debootstrapped root.
func TestCommandPrivateTmp(t *testing.T) {
	r := &Root{Suite: "host", Dir: "/", cache: t.TempDir()}
	name := fmt.Sprintf("/tmp/kmmap-private-tmp-%d", os.Getpid())
	script := "set -e; mkfifo " + name + "; sleep 0.5; ls " + name
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			out, err := r.Command(context.Background(), "/", "/bin/sh", "-c", script).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a command in the root: %v", err)
		}
	}
	if _, err := os.Lstat(name); err == nil {
		os.Remove(name)
		t.Errorf("%s was created in the host's /tmp, not the command's own", name)
	}
}
