//go:build hello_guest

// Package guest tests hello.ko from inside the guest.
package guest

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/kmmap/kmmap/vmtests/testmain"
	"golang.org/x/sys/unix"
)

// opens is the module's count of open files: every test must close what
// it opened.
func opens() (int64, error) {
	b, err := os.ReadFile("/sys/module/hello/parameters/opens")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, testmain.Invariant{Name: "hello's open files", Value: opens}))
}

func open(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile("/dev/hello", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestRead(t *testing.T) {
	b := make([]byte, 64)
	n, err := open(t).Read(b)
	if err != nil || string(b[:n]) != "hi there" { // the harness loads hello.ko with greeting=...
		t.Errorf("read %q, %v; want the greeting the module was loaded with", b[:n], err)
	}
}

func TestAdd(t *testing.T) {
	arg := struct{ A, B, Sum uint64 }{A: 40, B: 2}
	const add = 0xc0184a01 // _IOWR('J', 1, 24 bytes): a code ioctl-number.rst gives no one
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, open(t).Fd(), add, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		t.Fatalf("HELLO_IOC_ADD: %v", errno)
	}
	if arg.Sum != 42 {
		t.Errorf("40 + 2 = %d", arg.Sum)
	}
}
