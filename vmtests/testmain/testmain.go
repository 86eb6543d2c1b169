// Package testmain is the guest side of the harness, for a guest test
// package to import: a TestMain helper that marks the start and end of
// every test in the kernel log, so the host can tell which test a kernel
// report happened in, and checks after each test the invariants the suite
// registers (a counter of the module's that must come back to where it
// was, a page-pin balance).
//
//	func TestMain(m *testing.M) {
//		os.Exit(testmain.Run(m, testmain.Invariant{Name: "open files", Value: openFiles}))
//	}
//
// Subtests are not marked unless they call Mark: a report during one is
// attributed to its top-level test.
package testmain

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/kmmap/kmmap/initramfs/event"
	"golang.org/x/sys/unix"
)

// Marker starts every line the guest writes to the kernel log at a test's
// start and end, followed by "start" or "end" and the test's full name:
// the host's console parser matches it (vmtests).
const Marker = event.Marker

// Line is the kernel log record marking what ("start" or "end") of test.
func Line(what, test string) string { return event.MarkLine(what, test) }

// An Invariant is a quantity every test must leave as it found it: Value
// is read before the test and after it (after its cleanups, so after the
// files it opened are closed), and a difference fails the test.
type Invariant struct {
	Name  string
	Value func() (int64, error)
}

var (
	mu         sync.Mutex
	invariants []Invariant
	marked     = map[testing.TB]bool{}
	// parallel: the tests running in parallel (Parallel), whose
	// invariants are checked together, around all of them (window).
	parallel = map[string]bool{} // by top-level test name
	window   struct {
		running int      // parallel tests running now
		names   []string // those that ran since the window opened
		before  []int64  // the invariants when it opened
		pending int      // tests that called Parallel and have not ended
		idle    *sync.Cond
	}
	kmsg = struct {
		once sync.Once
		fd   int
		err  error
	}{}
)

// Run runs m's tests, each marked (Mark) and checked against invs, and
// returns m.Run's exit code. It fails at once, before any test, if this
// Go's testing package has changed so that its tests cannot be wrapped.
func Run(m *testing.M, invs ...Invariant) int {
	mu.Lock()
	invariants = append(invariants, invs...)
	mu.Unlock()
	if err := wrap(m); err != nil {
		fmt.Fprintln(os.Stderr, "testmain:", err)
		return 1
	}
	// A test waiting in AfterParallel holds one of go test's parallel
	// slots without using a CPU: one slot more than CPUs, unless set.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && runtime.GOMAXPROCS(0) > 1 {
		flag.Set("test.parallel", strconv.Itoa(runtime.GOMAXPROCS(0)+1))
	}
	return m.Run()
}

// wrap makes every top-level test of m call Mark first. testing.M has no
// hook per test; its list of tests is an unexported field, reached here
// through reflection, with an error (not a silent no-op) if it moved.
func wrap(m *testing.M) error {
	v := reflect.ValueOf(m).Elem().FieldByName("tests")
	if !v.IsValid() || v.Type() != reflect.TypeOf([]testing.InternalTest(nil)) {
		return errors.New("testing.M has no field tests []testing.InternalTest in this Go: testmain cannot mark each test; update it")
	}
	tests := *(*[]testing.InternalTest)(unsafe.Pointer(v.UnsafeAddr()))
	for i := range tests {
		f := tests[i].F
		tests[i].F = func(t *testing.T) {
			Mark(t)
			f(t)
		}
	}
	return nil
}

// Mark writes t's start to the kernel log now and its end when t and its
// cleanups are done, and checks the registered invariants around it. A
// test marked already (Run marks each top-level test) is not marked again.
func Mark(t testing.TB) {
	t.Helper()
	mu.Lock()
	if marked[t] {
		mu.Unlock()
		return
	}
	marked[t] = true
	invs := append([]Invariant(nil), invariants...)
	mu.Unlock()
	if err := devkmsg(); err != nil {
		t.Fatal(err)
	}
	before := make([]int64, len(invs))
	for i, inv := range invs {
		v, err := inv.Value()
		if err != nil {
			t.Fatalf("invariant %s: %v", inv.Name, err)
		}
		before[i] = v
	}
	write(t, Line("start", t.Name()))
	t.Cleanup(func() {
		defer func() {
			write(t, Line("end", t.Name()))
			mu.Lock()
			delete(marked, t)
			if !strings.Contains(t.Name(), "/") {
				delete(parallel, t.Name())
			}
			mu.Unlock()
		}()
		if inParallel(t) {
			return // checked with the others (Parallel)
		}
		for i, inv := range invs {
			v, err := inv.Value()
			switch {
			case err != nil:
				t.Errorf("invariant %s after the test: %v", inv.Name, err)
			case v != before[i]:
				t.Errorf("after the test, %s = %d, was %d before it (leak)", inv.Name, v, before[i])
			}
		}
	})
}

// devkmsg opens /dev/kmsg once, after checking that it lets every record
// through: by default it lets 10 per 5 s through and drops the rest.
func devkmsg() error {
	kmsg.once.Do(func() {
		b, err := os.ReadFile("/proc/sys/kernel/printk_devkmsg")
		if err != nil || strings.TrimSpace(string(b)) != "on" {
			kmsg.err = fmt.Errorf("kernel.printk_devkmsg = %q (%v): /dev/kmsg would drop test markers past 10 per 5 s; boot with printk.devkmsg=on", b, err)
			return
		}
		kmsg.fd, kmsg.err = unix.Open("/dev/kmsg", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	})
	return kmsg.err
}

// write writes one record to the kernel log at warning level, so that it
// reaches the console of a guest booted with loglevel=5.
func write(t testing.TB, line string) {
	if _, err := unix.Write(kmsg.fd, []byte("<4>"+line+"\n")); err != nil {
		t.Errorf("/dev/kmsg: %v", err)
	}
}

// Parallel runs top-level test t in parallel with the other tests that
// call it, when the guest has more than one CPU (else it does nothing: one
// CPU gains nothing and the suite keeps its order). Call it first thing,
// in a test that shares nothing with others: no fork, module parameter, fault
// injection, sysctl, cgroup, credentials or unloading. Such tests run
// after the others, as go test runs parallel tests. A kernel report while
// several ran is charged to each (the host says they ran in parallel);
// the invariants are checked once no parallel test runs any more, around
// all of them, and a difference fails the test that ended last, naming
// the others.
func Parallel(t *testing.T) {
	t.Helper()
	if !parallelOK() {
		return
	}
	mu.Lock()
	parallel[t.Name()] = true
	window.pending++
	mu.Unlock()
	ended := func() {
		window.pending--
		if window.idle != nil {
			window.idle.Broadcast()
		}
	}
	// Not running while paused: a report meanwhile is not its.
	write(t, Line("end", t.Name()))
	t.Parallel()
	mu.Lock()
	if window.running == 0 {
		window.before, window.names = make([]int64, len(invariants)), nil
		for i, inv := range invariants {
			v, err := inv.Value()
			if err != nil {
				ended()
				mu.Unlock()
				t.Fatalf("invariant %s: %v", inv.Name, err)
			}
			window.before[i] = v
		}
	}
	window.running++
	window.names = append(window.names, t.Name())
	mu.Unlock()
	write(t, Line("start", t.Name()))
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		window.running--
		ended()
		if window.running > 0 {
			return
		}
		for i, inv := range invariants {
			v, err := inv.Value()
			switch {
			case err != nil:
				t.Errorf("invariant %s after the tests run in parallel: %v", inv.Name, err)
			case v != window.before[i]:
				t.Errorf("after %s ran in parallel, %s = %d, was %d before them (a leak in one of them; run each alone with -test.run)", strings.Join(window.names, ", "), inv.Name, v, window.before[i])
			}
		}
	})
}

// AfterParallel makes top-level test t wait until every test that called
// Parallel has ended (it holds a parallel slot meanwhile, for which Run
// adds one to -test.parallel; call it from one test only), so that it sees what the whole suite left behind
// (a check after every other test). With one CPU it does nothing: such a
// test runs last already when it is last in the source.
func AfterParallel(t *testing.T) {
	t.Helper()
	if !parallelOK() {
		return
	}
	mu.Lock()
	parallel[t.Name()] = true // its invariants: the others' window checks them
	mu.Unlock()
	write(t, Line("end", t.Name()))
	t.Parallel()
	mu.Lock()
	if window.idle == nil {
		window.idle = sync.NewCond(&mu)
	}
	for window.pending > 0 {
		window.idle.Wait()
	}
	mu.Unlock()
	write(t, Line("start", t.Name()))
}

// parallelOK reports whether tests may run in parallel: more than one CPU,
// and go test's -test.parallel lets more than one run at once (with one,
// AfterParallel would wait for tests that cannot start).
func parallelOK() bool {
	if runtime.NumCPU() < 2 {
		return false
	}
	f := flag.Lookup("test.parallel")
	if f == nil {
		return false
	}
	n, err := strconv.Atoi(f.Value.String())
	return err == nil && n >= 2
}

// inParallel reports whether t (a test or a subtest) is of a test running
// in parallel, whose invariants the window checks: others change them
// meanwhile.
func inParallel(t testing.TB) bool {
	top, _, _ := strings.Cut(t.Name(), "/")
	mu.Lock()
	defer mu.Unlock()
	return parallel[top]
}
