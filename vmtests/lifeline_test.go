package vmtests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmmap/kmmap/initramfs"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
	"golang.org/x/sys/unix"
)

// The test binary runs itself as the run TestNothingOutlivesRun ends:
// lifelineStepEnv names the step (TestMain hands over to lifelineRun),
// lifelineTagEnv marks every process of that run, lifelineSnapsEnv is
// the snapshot store of the save step (empty: nothing to restore).
const (
	lifelineStepEnv  = "KMMAP_LIFELINE_STEP"
	lifelineTagEnv   = "KMMAP_LIFELINE_TAG"
	lifelineSnapsEnv = "KMMAP_LIFELINE_SNAPSHOTS"
)

// lifelineRun is the run to end: a command cell that sleeps in the guest
// ("pass": one that exits 0), restored from its snapshot, booted cold
// ("boot") or booted cold to save one ("save"). It returns the exit
// status.
func lifelineRun(step string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 2 }
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	if step == "image" { // the guest image, built into an empty cache
		root, err := goModuleRoot("")
		if err != nil {
			return fail(err)
		}
		if _, err := initramfs.Base(runtime.GOARCH, root, os.Getenv(lifelineSnapsEnv), logf); err != nil {
			return fail(err)
		}
		return 0
	}
	cfg, err := ConfigFromEnv()
	if err != nil {
		return fail(err)
	}
	cfg.Cold = step == "boot"
	root, err := goModuleRoot("")
	if err != nil {
		return fail(err)
	}
	opts := []Option{WithConfig(cfg)}
	if d := os.Getenv(lifelineSnapsEnv); d != "" {
		opts = append(opts, WithSnapshotDir(d))
	}
	// The smallest guest side there is (the module does not load, and
	// kmmap's suite and C programs would be built for nothing).
	h, err := New(Module{Dir: "testdata/warn"}, Guest{Dir: root, Package: "./vmtests/testdata/hang", Tags: []string{"hang_guest"}}, opts...)
	if err != nil {
		return fail(err)
	}
	f, err := h.Fetcher(logf)
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	id := os.Getenv("KMMAP_LIFELINE_CELL")
	tree, err := h.Tree(ctx, id, f)
	if err != nil {
		return fail(err)
	}
	cmd := []string{"sleep", "600"}
	if step == "pass" {
		cmd = []string{"sleep", "0"}
	}
	c, err := h.Prepare(ctx, f, tree, CellOptions{Logf: logf, NoModule: true, ResultsID: id + "-lifeline-" + step})
	if err != nil {
		return fail(err)
	}
	r := RunCommand(ctx, c, CommandJob{Argv: cmd})
	fmt.Fprintf(os.Stderr, "lifeline %s: %s (%s)\n%s\n", step, r.Verdict(), r.Mode, strings.Join(r.Problems, "\n"))
	return r.ExitCode()
}

// A run ended by any cause - Ctrl-C, a CI runner's SIGTERM, SIGKILL, go
// test's deadline (SIGQUIT) - while its guest boots, restores or saves a
// snapshot, or while it builds the guest image, leaves no process behind
// within seconds, a half-saved
// snapshot is a leftover prune removes at once, and the next run passes.
// (A build ended the same way: internal/toolchain's
// TestBuildDiesWithItsRun.) About 40 s warm, beside the matrix.
func TestNothingOutlivesRun(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	h := kmmapHarness(t)
	id := commandCellID(t, h)
	saves := t.TempDir()
	run := func(t *testing.T, step string, sig syscall.Signal, ready func(tag string) bool) {
		tag := strconv.FormatInt(time.Now().UnixNano(), 36)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lifelineStepEnv+"="+step, lifelineTagEnv+"="+tag, "KMMAP_LIFELINE_CELL="+id)
		switch step {
		case "save":
			cmd.Env = append(cmd.Env, lifelineSnapsEnv+"="+saves)
		case "image":
			cmd.Env = append(cmd.Env, lifelineSnapsEnv+"="+t.TempDir())
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, as a terminal's job
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() { lifeline.Kill(lifelineTagEnv, tag) }) // whatever the verdict, nothing of it stays
		if sig == 0 {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("the run after the killed ones failed: %v\n%s", err, out.Bytes())
				}
			case <-time.After(5 * time.Minute):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				t.Fatalf("the run did not end within 5 minutes:\n%s", out.Bytes())
			}
			return
		}
		deadline := time.Now().Add(5 * time.Minute)
		for !ready(tag) {
			select {
			case err := <-exited:
				t.Fatalf("the run ended (%v) before reaching the step:\n%s", err, out.Bytes())
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				t.Fatalf("the run did not reach the step within 5 minutes:\n%s", out.Bytes())
			}
		}
		time.Sleep(500 * time.Millisecond) // in the middle of it
		target := cmd.Process.Pid
		if sig == syscall.SIGINT {
			target = -target // Ctrl-C: the terminal signals the whole job
		}
		if err := syscall.Kill(target, sig); errors.Is(err, syscall.ESRCH) {
			// The step was over, and the run with it, before the signal
			// (a guest image built from a warm Go cache in under 500 ms):
			// nothing to kill; what it started must still be gone.
			t.Logf("the run ended before %v reached it (the step took under 500 ms): checking only that nothing of it is left", unix.SignalName(sig))
		} else if err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("the test binary did not end within 30 s of %v:\n%s", sig, out.Bytes())
		}
		if left := lifeline.Survivors(lifelineTagEnv, tag, 10*time.Second); len(left) > 0 {
			t.Errorf("10 s after %s ended the run, its processes still run:\n%s", unix.SignalName(sig), strings.Join(left, "\n"))
		}
	}
	qemuWith := func(arg string) func(string) bool {
		return func(tag string) bool {
			pids, _ := lifeline.Processes(lifelineTagEnv, tag)
			for _, p := range pids {
				if d := lifeline.Describe(p); strings.Contains(d, "qemu-system") && strings.Contains(d, arg) {
					return true
				}
			}
			return false
		}
	}
	building := func(tag string) bool { // a go command of the image's build
		pids, _ := lifeline.Processes(lifelineTagEnv, tag)
		for _, p := range pids {
			if d := lifeline.Describe(p); strings.Contains(d, "/bin/go ") && !strings.Contains(d, "setpriv") {
				return true
			}
		}
		return false
	}
	saving := func(tag string) bool {
		m, _ := filepath.Glob(filepath.Join(saves, ".tmp-*.ram"))
		return len(m) > 0 && qemuWith("")(tag)
	}
	for _, c := range []struct {
		step  string
		sig   syscall.Signal
		ready func(string) bool
	}{
		{"pass", 0, nil}, // a snapshot to restore
		{"restore", syscall.SIGTERM, qemuWith("-incoming")},
		{"restore", syscall.SIGQUIT, qemuWith("-incoming")},
		{"boot", syscall.SIGINT, qemuWith("")},
		{"save", syscall.SIGKILL, saving},
		{"image", syscall.SIGKILL, building},
		{"pass", 0, nil}, // and the next run passes
	} {
		name := c.step
		if c.sig != 0 {
			name += "/" + unix.SignalName(c.sig)
		}
		ran := false
		if !t.Run(name, func(t *testing.T) { ran = true; run(t, c.step, c.sig, c.ready) }) || !ran || c.step != "save" {
			continue
		}
		m, _ := filepath.Glob(filepath.Join(saves, ".tmp-*.ram"))
		for _, p := range m {
			if fi, err := os.Stat(p); err != nil || !kernels.Leftover(filepath.Base(p), fi.ModTime()) {
				t.Errorf("%s, the RAM of the snapshot the killed run was saving, is not a leftover prune removes (%v)", p, err)
			}
		}
		if len(m) == 0 {
			t.Errorf("the killed run's half-saved snapshot left no .tmp-*.ram in %s, and no snapshot may be whole", saves)
		}
	}
}
