package toolchain

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
	"golang.org/x/sys/unix"
)

func TestBaseSuite(t *testing.T) {
	for in, want := range map[string]string{"trixie-backports": "trixie", "bookworm": "bookworm", "bullseye-updates": "bullseye"} {
		if got := BaseSuite(in); got != want {
			t.Errorf("BaseSuite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPackagesHoldCompilerAndCross(t *testing.T) {
	pkgs := packages("trixie", "gcc-14", "amd64")
	for _, want := range []string{"gcc-14", "make", "dwarves", "libelf-dev"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("packages(trixie, gcc-14) lacks %s: %v", want, pkgs)
		}
	}
	cross := "gcc-14-aarch64-linux-gnu"
	if runtime.GOARCH == "arm64" {
		cross = "gcc-14-x86-64-linux-gnu"
	}
	if !slices.Contains(pkgs, cross) {
		t.Errorf("packages(gcc-14) lacks the cross compiler %s: %v", cross, pkgs)
	}
	// amd64 and arm64 share a root; the other arches have one of their
	// own, so that adding them left the first as it was.
	if slices.Contains(pkgs, "gcc-14-s390x-linux-gnu") || !slices.Equal(pkgs, packages("trixie", "gcc-14", "arm64")) {
		t.Errorf("packages(trixie, gcc-14, amd64) = %v: want the arm64 root's, with no s390x compiler", pkgs)
	}
	other := packages("trixie", "gcc-14", "s390x")
	for _, want := range []string{"gcc-14-s390x-linux-gnu", "gcc-14-powerpc64le-linux-gnu", "gcc-14-riscv64-linux-gnu", cross} {
		if !slices.Contains(other, want) {
			t.Errorf("packages(trixie, gcc-14, s390x) lacks %s: %v", want, other)
		}
	}
	if old := packages("bookworm", "gcc-12", "s390x"); slices.Contains(old, "gcc-12-s390x-linux-gnu") {
		t.Errorf("packages(bookworm, gcc-12, s390x) = %v: bookworm's roots build for no s390x kernel", old)
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
// in for a bootstrapped root.
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

// TestUsernsAdvice: where user namespaces are off, the error names the
// setting that turns them off and the command that turns them on.
func TestUsernsAdvice(t *testing.T) {
	for _, c := range []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "1\n"}, "kernel.apparmor_restrict_unprivileged_userns=0"},
		{map[string]string{"kernel/unprivileged_userns_clone": "0\n"}, "kernel.unprivileged_userns_clone=1"},
		{map[string]string{"user/max_user_namespaces": "0\n"}, "user.max_user_namespaces=10000"},
		{map[string]string{"user/max_user_namespaces": "100\n", "kernel/apparmor_restrict_unprivileged_userns": "0\n"}, "No sysctl forbids them"},
	} {
		dir := t.TempDir()
		for name, v := range c.files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := usernsAdvice(dir); !strings.Contains(got, c.want) {
			t.Errorf("with %v: advice %q, want it to say %q", c.files, got, c.want)
		}
	}
}

func TestHasSubids(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(f, []byte("alice:100000:65536\n1001:165536:65536\nbob:231072:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, uid string
		want      bool
	}{{"alice", "1000", true}, {"carol", "1001", true}, {"bob", "1002", false}, {"dave", "1003", false}} {
		if got := hasSubids(f, c.name, c.uid); got != c.want {
			t.Errorf("hasSubids(%s, %s) = %v, want %v", c.name, c.uid, got, c.want)
		}
	}
	if hasSubids(filepath.Join(t.TempDir(), "none"), "alice", "1000") {
		t.Error("a missing subuid file gives nobody a range")
	}
}

// TestCommandSeesCacheUnderTmp: a cache under /tmp (t.TempDir's, or a
// user's KMMAP_CACHE=/tmp/...) is still the cache inside the root, under
// the command's own /tmp. The private /tmp was once mounted after the
// cache's bind and hid it: "can't cd to .../tmp/...".
func TestCommandSeesCacheUnderTmp(t *testing.T) {
	cache := t.TempDir()
	if !strings.HasPrefix(cache, "/tmp/") {
		t.Skipf("t.TempDir() is %s, not under /tmp (TMPDIR is set)", cache)
	}
	r := &Root{Suite: "host", Dir: "/", cache: cache}
	out, err := r.Command(context.Background(), cache, "/bin/sh", "-c", "echo built > out").CombinedOutput()
	if err != nil {
		t.Fatalf("a command in %s: %v\n%s", cache, err, out)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "out")); err != nil || string(b) != "built\n" {
		t.Errorf("what the command wrote in the cache: %q, %v", b, err)
	}
}

// buildTagEnv marks the processes of the build TestBuildDiesWithItsRun
// ends; set, the test binary is that build's run (TestMain).
const buildTagEnv = "KMMAP_BUILD_TAG"

func TestMain(m *testing.M) {
	if os.Getenv(buildTagEnv) != "" {
		// A build as a kernel's runs: make and its compilers, here two
		// sleeps, in the root's namespaces.
		r := &Root{Suite: "host", Dir: "/", cache: os.TempDir()}
		err := r.Command(context.Background(), "/", "/bin/sh", "-c", "sleep 600 & sleep 600 & wait").Run()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// A build whose run dies - killed, or ended by a CI runner's SIGTERM -
// leaves none of its processes behind (the kernel builds run as this
// one does: Root.Command, with --kill-child, tied to its run).
func TestBuildDiesWithItsRun(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			tag := fmt.Sprintf("%d-%d", os.Getpid(), sig)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), buildTagEnv+"="+tag)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sleeps := func() (n int) {
				pids, _ := lifeline.Processes(buildTagEnv, tag)
				for _, p := range pids {
					if strings.HasPrefix(lifeline.Describe(p), fmt.Sprintf("%d sleep", p)) {
						n++
					}
				}
				return n
			}
			t.Cleanup(func() { lifeline.Kill(buildTagEnv, tag) })
			for end := time.Now().Add(30 * time.Second); sleeps() < 2; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(end) {
					cmd.Process.Kill()
					t.Fatal("the build did not start its two processes within 30 s")
				}
			}
			cmd.Process.Signal(sig)
			cmd.Wait()
			if left := lifeline.Survivors(buildTagEnv, tag, 10*time.Second); len(left) > 0 {
				t.Errorf("10 s after %s ended the build's run, its processes still run:\n%s", unix.SignalName(sig), strings.Join(left, "\n"))
			}
		})
	}
}

// TestMakeEnvUnderMake: a harness run under make (make bench runs make
// test, which runs go test) hands the builds MAKEFLAGS with w and a
// MAKELEVEL; a make -s that inherits them prints "make[2]: Entering
// directory" into its output, which a cold make bench read as the
// kernel's version. With MakeEnv, the output is the version alone.
func TestMakeEnvUnderMake(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make not found (apt-get install make)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte("kernelversion:\n\t@echo 6.12.117\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	outer := append(os.Environ(), "MAKEFLAGS=w", "MAKELEVEL=2", "MFLAGS=-w")
	for _, c := range []struct {
		env   []string
		clean bool
	}{{outer, false}, {MakeEnv(outer), true}} {
		cmd := exec.Command("make", "-C", dir, "-s", "kernelversion")
		cmd.Env = c.env
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if clean := string(out) == "6.12.117\n"; clean != c.clean {
			t.Errorf("make -s kernelversion under an outer make's environment (cleaned: %v) printed %q", c.clean, out)
		}
	}
}
