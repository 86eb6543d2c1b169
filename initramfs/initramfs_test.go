package initramfs

import (
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/gobusybox/src/pkg/golang"
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

// gobusybox gives every `go build` -a, which rebuilt the standard library
// and every dependency on each image build; the
// script it runs as its compiler passes everything else, in order, with
// arguments that only contain -a, spaces or quotes kept whole.
func TestTiedGoDropsRebuildAll(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skipf("no setpriv (util-linux): %v", err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\nfor a; do printf '%s\\n' \"$a\"; done\n"
	if err := os.WriteFile(filepath.Join(root, "bin", "go"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	env := golang.Default(golang.WithGOARCH("arm64"))
	env.GOROOT = root
	dir := t.TempDir()
	if err := tieGo(env, dir); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-o", "/tmp/a b", "-a", "-gcflags=all=-l", "-ldflags", "-s -w -buildid=", "-trimpath", "-tags=-a", "it's", "."}
	out, err := exec.Command(env.Compiler.Path, args...).Output()
	if err != nil {
		t.Fatalf("%s: %v", env.Compiler.Path, err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	want := slices.Delete(slices.Clone(args), 3, 4)
	if !slices.Equal(got, want) {
		t.Errorf("go got %q\nwant %q", got, want)
	}
}
