//go:build linux

// Command agent is the guest side of kmmap: started by u-root's init as
// uinit, it loads the kernel modules the guest needs, opens the event channel
// to the host, loads the module under test, runs the guest test binary with
// its output converted by test2json, unloads the module and powers off.
//
// Anything that goes wrong is sent to the host as an event and also printed
// on the console with the prefix "kmmap-agent:", so the host can always tell
// why a run ended.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hugelgupf/vmtest/guest"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "kmmap-agent: "+format+"\n", args...)
}

func main() {
	err := run()
	if err != nil {
		logf("FAILED: %v", err)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		logf("power off: %v", err)
	}
	select {}
}

func run() error {
	uptime := readUptime()
	// u-root archives its build directory, made 0700, as the root
	// directory: open it to the other users the suite runs programs as.
	if err := os.Chmod("/", 0o755); err != nil {
		return fmt.Errorf("chmod /: %w", err)
	}
	b, err := os.ReadFile(event.ManifestPath)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	var m event.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("parse manifest: %w", err)
	}
	for _, mod := range m.Modules {
		if err := insmod(mod, ""); err != nil {
			return err
		}
	}
	em, err := openChannel()
	if err != nil {
		return err
	}
	defer em.Close()
	emit := func(e event.Event) {
		if err := em.Emit(e); err != nil {
			logf("emit %s: %v", e.Agent, err)
		}
	}
	fail := func(err error) error {
		emit(event.Event{Agent: event.AgentError, Error: err.Error()})
		return err
	}
	emit(event.Event{Agent: event.AgentModules, Uptime: uptime})

	if err := receiveModule(&m); err != nil {
		emit(event.Event{Agent: event.AgentKmod, Error: err.Error()})
		return err
	}
	if err := insmod(m.Kmod, m.KmodParams); err != nil {
		emit(event.Event{Agent: event.AgentKmod, Error: err.Error()})
		return err
	}
	emit(event.Event{Agent: event.AgentKmod})
	if sec, err := sections(m.KmodName); err != nil {
		logf("module sections: %v", err)
	} else {
		emit(event.Event{Agent: event.AgentModule, Sections: sec})
	}
	switch {
	case m.Shell:
		shell(m)
	case m.Bench != "":
		m.TestArgs = append(m.TestArgs, "-test.run=^$", "-test.bench="+m.Bench, "-test.benchtime="+m.BenchTime)
		exit := event.Event{Agent: event.AgentExit}
		if err := runTests(m, em); err != nil {
			exit.Error = err.Error()
		}
		emit(exit)
	default:
		if err := test(m, em, emit); err != nil {
			return fail(err)
		}
	}

	name := m.KmodName
	unload := event.Event{Agent: event.AgentUnload}
	if err := kmodule.Delete(name, 0); err != nil {
		unload.Error = fmt.Sprintf("delete_module(%s): %v", name, err)
	}
	emit(unload)
	if files, err := coverage(); err != nil {
		emit(event.Event{Agent: event.AgentCoverage, Error: err.Error()})
	} else if files != nil {
		emit(event.Event{Agent: event.AgentCoverage, Files: files})
	}
	return nil
}

// gcovDir is where a kernel with CONFIG_GCOV_KERNEL keeps its counters.
const gcovDir = "/sys/kernel/debug/gcov"

// coverage reads every .gcda file under gcovDir: the counters of the
// objects built with GCOV_PROFILE (the module under test's, kept after it
// is unloaded: gcov_persist). nil when the kernel has no gcov.
func coverage() (map[string][]byte, error) {
	if _, err := os.Stat(gcovDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	files := map[string][]byte{}
	err := filepath.WalkDir(gcovDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".gcda") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(p, gcovDir)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the coverage counters: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no .gcda file: was the module built with GCOV_PROFILE?", gcovDir)
	}
	return files, nil
}

// test lists the suite's tests for the host, then runs them.
func test(m event.Manifest, em io.Writer, emit func(event.Event)) error {
	tests, err := listTests(m.Test, listPattern(m.TestArgs))
	if err != nil {
		return err
	}
	emit(event.Event{Agent: event.AgentList, Tests: tests})

	runErr := runTests(m, em)
	exit := event.Event{Agent: event.AgentExit}
	if runErr != nil {
		exit.Error = runErr.Error()
	}
	emit(exit)
	return nil
}

// receiveModule reads the module under test from the host's module port
// (the host may still be building it while the guest boots) into m.Kmod,
// and sets m.KmodName.
func receiveModule(m *event.Manifest) error {
	dev, err := guest.VirtioSerialDevice(event.ModulePort)
	if err != nil {
		return fmt.Errorf("module port: %w", err)
	}
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("module port: %w", err)
	}
	defer f.Close()
	name, ko, err := event.ReadModule(f)
	if err != nil {
		return err
	}
	if err := os.WriteFile(m.Kmod, ko, 0o644); err != nil {
		return fmt.Errorf("store the module: %w", err)
	}
	m.KmodName = name
	return nil
}

// readUptime returns the kernel's uptime in seconds, 0 if unknown.
func readUptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	up, _ := strconv.ParseFloat(f, 64)
	return up
}

// listPattern is the top level of a -test.run flag among args: what
// -test.list must match so that the host expects only the tests that run.
func listPattern(args []string) string {
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "-test.run="); ok {
			top, _, _ := strings.Cut(p, "/")
			return top
		}
	}
	return "."
}

// sections reads the load addresses of the module's ELF sections, what
// gdb's add-symbol-file needs.
func sections(name string) (map[string]string, error) {
	dir := filepath.Join("/sys/module", name, "sections")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// shell runs an interactive shell on the console; when it exits, the
// module is unloaded and the guest powers off.
func shell(m event.Manifest) {
	fmt.Printf("\nkmmap: the module %s is loaded. The guest suite: %s -test.v; its files: %s.\n"+
		"kmmap: leave the shell (exit or Ctrl-D) to unload the module and power off.\n\n", m.KmodName, m.Test, filepath.Dir(m.Test))
	cmd := exec.Command("/bbin/gosh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "PATH=/kmmap:/bbin:/bin:/ubin", "HOME=/", "TERM=linux")
	if err := cmd.Run(); err != nil {
		logf("shell: %v", err)
	}
}

// openChannel waits for the virtio-serial port to appear (udev-less: the
// kernel creates the sysfs entry when virtio_console probes).
func openChannel() (*guest.Emitter[event.Event], error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		em, err := guest.SerialEventChannel[event.Event](event.Channel)
		if err == nil {
			return em, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no event channel %q (is virtio_console loaded and the QEMU virtserialport present?): %w", event.Channel, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func insmod(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := kmodule.FileInit(f, params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

func listTests(bin, pattern string) ([]string, error) {
	out, err := exec.Command(bin, "-test.list", pattern).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -test.list: %w", bin, err)
	}
	var tests []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); strings.HasPrefix(t, "Test") {
			tests = append(tests, t)
		}
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("%s lists no tests", bin)
	}
	return tests, nil
}

// runTests runs the test binary with -test.v=test2json and pipes its output
// through test2json onto the event channel.
func runTests(m event.Manifest, em io.Writer) error {
	args := append([]string{"-test.v=test2json", "-test.count=1"}, m.TestArgs...)
	cmd := exec.Command(m.Test, args...)
	cmd.Dir = filepath.Dir(m.Test)
	// No garbage collection until the heap nears GOMEMLIMIT: under TCG a
	// collection costs milliseconds, and the suite allocates little (the
	// whole 6.1-amd64 suite: 3.0 -> 2.4 s). The limit keeps the benchmarks'
	// large buffers within the guest's memory.
	cmd.Env = append(os.Environ(), "GOGC=off", "GOMEMLIMIT=192MiB")
	cmd.Stderr = os.Stderr
	conv := exec.Command("test2json", "-t", "-p", "guest")
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	conv.Stdin = pr
	conv.Stdout = em
	conv.Stderr = os.Stderr
	if err := conv.Start(); err != nil {
		return fmt.Errorf("start test2json: %w", err)
	}
	runErr := cmd.Run()
	pw.Close()
	if err := conv.Wait(); err != nil {
		return fmt.Errorf("test2json: %w", err)
	}
	if runErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(m.Test), runErr)
	}
	return nil
}
