package initramfs

import (
	"go/build"
	"os/exec"
	"strings"
	"testing"
)

// A program built with -trimpath (a user's GOFLAGS=-trimpath: go test
// builds the harness so) has no GOROOT of its own; the image is built with
// the go command's then. Before, gobusybox failed: "empty GOROOT".
func TestGoEnvWithoutGOROOT(t *testing.T) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	saved := build.Default.GOROOT
	build.Default.GOROOT = ""
	t.Cleanup(func() { build.Default.GOROOT = saved })
	t.Setenv("GOROOT", "")
	env, err := goEnv("arm64", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); env.GOROOT != want || env.GOARCH != "arm64" {
		t.Errorf("goEnv without a GOROOT of its own: GOROOT %q GOARCH %q, want %q and arm64", env.GOROOT, env.GOARCH, want)
	}
	if err := env.Valid(); err != nil {
		t.Errorf("goEnv without a GOROOT of its own: %v", err)
	}
}
