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
	"fmt"
	"os"
	"reflect"
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
	kmsg       = struct {
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
			mu.Unlock()
		}()
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
