// Package lifeline ties the processes kmmap starts - QEMU, kernel and
// module builds, toolchain roots, nested go test runs - to the process
// that started them, so that none outlives it, whatever ends it: a go
// test deadline (SIGQUIT, then a kill), Ctrl-C, a CI runner's SIGTERM,
// SIGKILL.
//
// The means is the kernel's parent-death signal (prctl PR_SET_PDEATHSIG):
// it is delivered by the kernel itself, so it works when the parent is
// SIGKILLed and cannot clean up, which neither a signal handler nor a
// process group nor a subreaper can promise. Builds run in a PID
// namespace of their own besides (toolchain.Root.Command): when its
// first process dies, the kernel kills every process in it, make's
// compilers included.
//
// One caveat, as for os/exec's SysProcAttr.Pdeathsig: the signal follows
// the thread that started the child, and Go ends a thread only when a
// goroutine locked to it (runtime.LockOSThread) returns without unlocking.
// Nothing in kmmap's process does that. It ties processes; it starts none
// of its own.
package lifeline

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Tie makes cmd die (SIGKILL) when the process that starts it dies.
// Call it before cmd.Start.
func Tie(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// Prefix is what to put before a command that a library starts (QEMU,
// started by vmtest, whose exec.Cmd kmmap cannot reach) so that it dies
// with this process: util-linux's setpriv sets the parent-death signal
// and execs the command, which keeps it.
func Prefix() ([]string, error) {
	path, err := exec.LookPath("setpriv")
	if err != nil {
		return nil, errors.New("setpriv not found: it ties each QEMU to the test that starts it; install util-linux (sudo apt-get install util-linux)")
	}
	// By its path: a command may run with a PATH of its own (gobusybox
	// runs go with PATH=$GOROOT/bin).
	return []string{path, "--pdeathsig", "KILL", "--"}, nil
}

// Self makes this process die (SIGKILL) when its parent dies: a test
// binary whose go test was killed, a kmmap command whose go run was.
// Without it the process is reparented and runs on, with its guests.
func Self() error {
	ppid := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	// The parent may have died before the prctl: then nothing sends it.
	if os.Getppid() != ppid {
		return errors.New("the parent process ended before this one could tie itself to it")
	}
	return nil
}

// Processes lists the processes, other than this one, whose environment
// holds name=value: with a variable only one run sets, every process that
// run started and its children started in turn (the environment is
// inherited), namespaces and all. A test uses it to look for what a
// killed run left behind.
func Processes(name, value string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	want := []byte(name + "=" + value)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or not this user's: not started by this one
		}
		if slices.ContainsFunc(bytes.Split(env, []byte{0}), func(kv []byte) bool { return bytes.Equal(kv, want) }) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// Describe is pid's command line, for a message about a process left.
func Describe(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return fmt.Sprintf("%d (gone)", pid)
	}
	return fmt.Sprintf("%d %s", pid, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
}

// Kill sends SIGKILL to every process Processes(name, value) lists: a
// test's cleanup, whatever its verdict.
func Kill(name, value string) {
	pids, _ := Processes(name, value)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// Survivors waits up to d for every process Processes(name, value) lists
// to end, and describes (Describe) those still running then.
func Survivors(name, value string, d time.Duration) []string {
	var left []string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		pids, _ := Processes(name, value)
		if left = nil; len(pids) == 0 {
			break
		}
		for _, p := range pids {
			left = append(left, Describe(p))
		}
	}
	return left
}
