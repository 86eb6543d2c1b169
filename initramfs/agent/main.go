//go:build linux

// Command agent is the guest side of kmmap: started by u-root's init as
// uinit, it loads the kernel modules the guest needs, opens the event
// channel to the host and waits on the module port for its job. That wait
// is the snapshot point: the host may save the guest there and restore it
// for later runs, so everything a run does comes after it. The agent takes
// the job, then the host's time and entropy (setting the clock and
// reseeding the random pool, so that a restored guest is not a copy of
// the last one), mounts the host's shares, receives the guest test binary
// and the suite's files (they change with every edit of a guest test, so
// they are not in the image), receives and loads the module under test,
// runs the guest test binary with its output converted by test2json (or
// the benchmarks, a command or a shell), unloads the module and powers
// off.
//
// Anything that goes wrong is sent to the host as an event and also printed
// on the console with the prefix "kmmap-agent:", so the host can always tell
// why a run ended.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

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
	// A POSIX shell where scripts look for one: u-root's gosh (mvdan's
	// sh interpreter), for sh -c '...' and #!/bin/sh scripts.
	if err := shell0(); err != nil {
		return err
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
	var emitMu sync.Mutex
	emit := func(e event.Event) {
		emitMu.Lock()
		defer emitMu.Unlock()
		if err := em.Emit(e); err != nil {
			logf("emit %s: %v", e.Agent, err)
		}
	}
	fail := func(err error) error {
		emit(event.Event{Agent: event.AgentError, Error: err.Error()})
		return err
	}
	emit(event.Event{Agent: event.AgentModules, Uptime: uptime})

	// The snapshot point: a restored guest resumes in this read.
	port, err := openPort()
	if err != nil {
		return fail(err)
	}
	defer port.Close()
	br := event.NewPortReader(port)
	job, err := event.ReadJob(br)
	if err != nil {
		return fail(err)
	}
	emit(event.Event{Agent: event.AgentJob})
	clock, err := fresh(br)
	if err != nil {
		emit(event.Event{Agent: event.AgentFresh, Error: err.Error()})
		return err
	}
	emit(event.Event{Agent: event.AgentFresh, Clock: clock})
	// A guest restored from a snapshot whose timers no longer fire hangs
	// in its first sleep (BENCHMARKS.md, "Why the machines are so"): here,
	// before it reads its files, where the host gives up on it and boots
	// the cell cold, rather than in a test, where the hang is the test's.
	time.Sleep(time.Millisecond)
	if err := mountShares(job.Shares); err != nil {
		return fail(err)
	}
	// The guest test binary and the suite's files come with the run, not
	// in the image: an edit of a guest test keeps the image and the
	// snapshot. The tests are listed while the module is still on its way.
	if _, err := event.ReceiveFiles(br, "/"); err != nil {
		return fail(fmt.Errorf("receiving the guest suite's files: %w", err))
	}
	var tests []string
	listed := make(chan error, 1)
	go func() {
		var err error
		tests, err = listTests(m.Test, ".")
		listed <- err
	}()

	var kmodName string
	if !job.NoModule {
		if kmodName, err = receiveModule(br, m.Kmod); err != nil {
			emit(event.Event{Agent: event.AgentKmod, Error: err.Error()})
			return err
		}
		if err := insmod(m.Kmod, job.KmodParams); err != nil {
			emit(event.Event{Agent: event.AgentKmod, Error: err.Error()})
			return err
		}
		emit(event.Event{Agent: event.AgentKmod})
		if sec, err := sections(kmodName); err != nil {
			logf("module sections: %v", err)
		} else {
			emit(event.Event{Agent: event.AgentModule, Sections: sec})
		}
	}
	listErr := <-listed
	switch {
	case job.Shell:
		shell(m, job, kmodName)
	case len(job.Run) > 0:
		emit(runCommand(job, emit))
	case job.Bench != "":
		job.TestArgs = append(job.TestArgs, "-test.run=^$", "-test.bench="+job.Bench, "-test.benchtime="+job.BenchTime)
		exit := event.Event{Agent: event.AgentExit}
		if err := runTests(m.Test, job.TestArgs, em); err != nil {
			exit.Error = err.Error()
		}
		emit(exit)
	default:
		if listErr != nil {
			return fail(listErr)
		}
		if err := test(m.Test, tests, job.TestArgs, em, emit); err != nil {
			return fail(err)
		}
	}

	if job.NoModule {
		return nil
	}
	name := kmodName
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
	// After the coverage: gcov keeps an unloaded module's counters, and
	// a load would start them anew.
	if unload.Error == "" {
		emit(reload(m.Kmod, job.KmodParams, name))
	}
	return nil
}

// reload loads the module under test again, with the same parameters,
// and removes it again: what every unload promises the next load.
func reload(path, params, name string) event.Event {
	e := event.Event{Agent: event.AgentReload}
	if err := insmod(path, params); err != nil {
		e.Error = fmt.Sprintf("loading it again after it was removed: %v", err)
	} else if err := kmodule.Delete(name, 0); err != nil {
		e.Error = fmt.Sprintf("delete_module(%s) after loading it again: %v", name, err)
	}
	return e
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

// test tells the host which of the suite's tests will run, then runs
// them.
func test(bin string, all, args []string, em io.Writer, emit func(event.Event)) error {
	tests, err := selectTests(all, listPattern(args))
	if err != nil {
		return err
	}
	emit(event.Event{Agent: event.AgentList, Tests: tests})

	runErr := runTests(bin, args, em)
	exit := event.Event{Agent: event.AgentExit}
	if runErr != nil {
		exit.Error = runErr.Error()
	}
	emit(exit)
	return nil
}

// openPort opens the port the host sends the job and the module under
// test through (the host may still be building the module while the
// guest boots).
func openPort() (*os.File, error) {
	dev, err := guest.VirtioSerialDevice(event.ModulePort)
	if err != nil {
		return nil, fmt.Errorf("module port: %w", err)
	}
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("module port: %w", err)
	}
	return f, nil
}

// fresh makes a guest, maybe restored from a snapshot, not a copy of the
// last one: it reads the Fresh line, sets CLOCK_REALTIME to the host's time and reseeds the
// kernel's random pool with the host's entropy, crediting it, so that
// every process started after it (the suite, a command) draws numbers of
// its own. It returns the clock it set.
func fresh(br *bufio.Reader) (int64, error) {
	job, err := event.ReadFresh(br)
	if err != nil {
		return 0, err
	}
	ts := unix.NsecToTimespec(job.Time)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("set the clock from the host's: %w", err)
	}
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("reseed the random pool: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info: entropy_count (bits), buf_size (bytes), buf.
	info := make([]byte, 8+len(job.Entropy))
	binary.NativeEndian.PutUint32(info[0:], uint32(8*len(job.Entropy)))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(job.Entropy)))
	copy(info[8:], job.Entropy)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return 0, fmt.Errorf("reseed the random pool: RNDADDENTROPY: %w", e)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.RNDRESEEDCRNG, 0); err != nil {
		return 0, fmt.Errorf("reseed the random pool: RNDRESEEDCRNG: %w", err)
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
		return 0, err
	}
	return now.Nano(), nil
}

// receiveModule reads the module under test's frame from the port into
// path and returns its name.
func receiveModule(br *bufio.Reader, path string) (string, error) {
	name, ko, err := event.ReadModule(br)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, ko, 0o644); err != nil {
		return "", fmt.Errorf("store the module: %w", err)
	}
	return name, nil
}

// shell0 makes /bin/sh (initramfs/sh, which runs u-root's gosh) and
// /root, HOME of commands.
func shell0() error {
	for _, d := range []string{"/bin", "/root"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink("/bbin/sh", "/bin/sh"); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("/bin/sh: %w", err)
	}
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
func shell(m event.Manifest, job event.Job, kmodName string) {
	loaded := "No module is loaded."
	if !job.NoModule {
		loaded = fmt.Sprintf("The module %s is loaded.", kmodName)
	}
	fmt.Printf("\nkmmap: %s The guest suite: %s -test.v; its files: %s.\n", loaded, m.Test, filepath.Dir(m.Test))
	for _, s := range job.Shares {
		fmt.Printf("kmmap: %s is the host's, read-write: what you write there is on the host.\n", s.Path)
	}
	fmt.Printf("kmmap: leave the shell (exit or Ctrl-D) to power off.\n\n")
	cmd := exec.Command("/bbin/gosh")
	cmd.Dir = runDir(job)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = commandEnv(job)
	if err := cmd.Run(); err != nil {
		logf("shell: %v", err)
	}
}

// commandEnv is the environment of a command or shell in the guest: the
// agent's, u-root's tools and the suite's files on PATH, a home, a
// terminal type, and what the host adds.
func commandEnv(job event.Job) []string {
	env := append(os.Environ(), "PATH=/bbin:/bin:/ubin:/usr/bin:/kmmap", "HOME=/root", "TERM=linux", "USER=root", "SHELL=/bin/sh")
	return append(env, job.RunEnv...)
}

// runDir is where a command or shell starts: RunDir, else /.
func runDir(job event.Job) string {
	if job.RunDir != "" {
		return job.RunDir
	}
	return "/"
}

// shareMsize is the 9p message size: 512 KiB moves large files in fewer
// round trips than the kernel's default of 8 KiB (128 KiB from 6.x).
const shareMsize = 512 << 10

// mountShares mounts each host directory over virtio 9p at its path.
func mountShares(shares []event.Share) error {
	for _, s := range shares {
		if err := os.MkdirAll(s.Path, 0o755); err != nil {
			return fmt.Errorf("share %s: %w", s.Path, err)
		}
		opts := fmt.Sprintf("trans=virtio,version=9p2000.L,msize=%d,cache=none", shareMsize)
		if err := unix.Mount(s.Tag, s.Path, "9p", 0, opts); err != nil {
			return fmt.Errorf("mount the host's %s over virtio 9p (tag %s, %s): %w (does the kernel have 9p and 9pnet_virtio?)", s.Path, s.Tag, opts, err)
		}
	}
	return nil
}

// runCommand runs the manifest's command with its output sent as events,
// marked in the kernel log as event.RunMarker, and returns its end.
func runCommand(job event.Job, emit func(event.Event)) event.Event {
	kmsg(event.MarkLine("start", event.RunMarker))
	defer kmsg(event.MarkLine("end", event.RunMarker))
	cmd := exec.Command(job.Run[0], job.Run[1:]...)
	cmd.Dir = runDir(job)
	cmd.Env = commandEnv(job)
	cmd.Stdout = emitWriter{event.AgentStdout, emit}
	cmd.Stderr = emitWriter{event.AgentStderr, emit}
	err := cmd.Run()
	end := event.Event{Agent: event.AgentRun, Status: cmd.ProcessState.ExitCode()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			end.Status, end.Error = 128+int(ws.Signal()), ee.Error()
		}
	default:
		end.Status, end.Error = -1, err.Error()
	}
	return end
}

// emitWriter sends what a command writes as events of one kind.
type emitWriter struct {
	kind string
	emit func(event.Event)
}

func (w emitWriter) Write(p []byte) (int, error) {
	w.emit(event.Event{Agent: w.kind, Output: string(p)})
	return len(p), nil
}

// kmsg writes a warning-level record to the kernel log (the console shows
// it: the guest boots with loglevel=5).
func kmsg(line string) {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		logf("/dev/kmsg: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString("<4>" + line + "\n"); err != nil {
		logf("/dev/kmsg: %v", err)
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

// selectTests is what `-test.list pattern` would print of all: the tests
// whose name the pattern (the top level of a -test.run) matches, as the
// testing package matches it.
func selectTests(all []string, pattern string) ([]string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("-test.run: %w", err)
	}
	var out []string
	for _, t := range all {
		if re.MatchString(t) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no test matches %q", pattern)
	}
	return out, nil
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
func runTests(bin string, testArgs []string, em io.Writer) error {
	args := append([]string{"-test.v=test2json", "-test.count=1"}, testArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Dir(bin)
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
		return fmt.Errorf("%s: %w", filepath.Base(bin), runErr)
	}
	return nil
}
