// Package kmmap is kmmap's own use of the harness (package vmtests): where
// its module and guest suite are in the checkout, the flags and kernel
// arguments the suite needs on each kernel, the C programs and the file
// system image it runs in the guest, and where its mutants are. The
// harness knows none of this: vmtests' tests and cmd/kmmap give it to
// vmtests.New as a Module and a Guest. It must not import vmtests (its
// tests use it, inside that package).
package kmmap

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/kernels"
)

// Where kmmap's parts are, relative to the checkout's root.
const (
	// ModuleDir is kmmap.ko's Kbuild directory.
	ModuleDir = "kmod"
	// GuestPackage is the guest suite, as go test -c takes it from the root.
	GuestPackage = "./vmtests/guest"
	// GuestTag keeps the guest suite out of go test ./... on the host.
	GuestTag = "kmmap_guest"
	// MutantsDir holds the committed mutants of kmod/, one patch each.
	MutantsDir = "internal/kmmap/mutants"
)

// DefaultMutantCell is where a mutant runs when its patch names no cell:
// a distribution kernel with two CPUs booted with init_on_alloc=0
// (kernels.lock), where a missing zeroing and a race can show.
const DefaultMutantCell = "6.12-amd64"

// Sources are the files, outside the guest package, the guest side is
// built from (the demo's C and the UAPI header), in the checkout at root.
func Sources(root string) []string {
	return []string{filepath.Join(root, ModuleDir, "examples"), filepath.Join(root, ModuleDir, "include", "uapi", "linux")}
}

// maxPageSize is the largest page size an ARM kernel may have (64K): the
// harness refuses an ARM program aligned to less.
const maxPageSize = 64 << 10

// Flags are the guest suite's flags for a kernel of Debian arch debArch
// with this page size, CPUs and configuration, in a run with seed:
//   - the page size and CPUs the suite checks;
//   - whether the kernel runs 32-bit programs (the C demo built -m32 or
//     for armhf, through compat_ioctl): IA32_EMULATION on amd64 (see
//     KernelArgs), COMPAT on arm64, which Debian's 16K kernels have
//     too; never where Debian has no 32-bit userland for the arch
//     (s390x has COMPAT, for 31-bit programs no compiler here makes);
//   - the largest sizes of TestLargeWork under a short soft-lockup
//     threshold where KASAN and the soft-lockup detector are built in,
//     and TestAllocFailures where failslab and fail_page_alloc are (the
//     debug cells);
//   - the race tests' denser KCSAN sampling where KCSAN is built in;
//   - TestRandomArguments' seed, when the run has one.
func Flags(debArch string, pageSize, cpus int, c kernels.Config, seed string) []string {
	compat := c.Enabled("CONFIG_COMPAT")
	if debArch == "amd64" {
		compat = c.Enabled("CONFIG_IA32_EMULATION")
	}
	if a, err := arch.Lookup(debArch); err != nil || a.Compat32 == "" {
		compat = false // no 32-bit userland of the arch to build the demo for
	}
	flags := []string{fmt.Sprintf("-kmmap.pagesize=%d", pageSize), fmt.Sprintf("-kmmap.cpus=%d", cpus), fmt.Sprintf("-kmmap.compat=%t", compat)}
	if c.Enabled("CONFIG_SOFTLOCKUP_DETECTOR") && c.Enabled("CONFIG_KASAN") {
		flags = append(flags, "-kmmap.large")
	}
	if c.Enabled("CONFIG_FAILSLAB") && c.Enabled("CONFIG_FAIL_PAGE_ALLOC") && c.Enabled("CONFIG_FAULT_INJECTION_DEBUG_FS") {
		flags = append(flags, "-kmmap.faultinject")
	}
	if c.Enabled("CONFIG_KCSAN") {
		flags = append(flags, "-kmmap.kcsan")
	}
	if seed != "" {
		flags = append(flags, "-kmmap.seed="+seed)
	}
	return flags
}

// KernelArgs are the kernel arguments the suite needs on a kernel of
// debArch with configuration c. Debian turns ia32 emulation off by default from 6.7
// (CONFIG_IA32_EMULATION_DEFAULT_DISABLED), and the suite's 32-bit demo
// needs it: ia32_emulation=1 turns it back on.
func KernelArgs(debArch string, c kernels.Config) []string {
	if debArch == "amd64" && c.Enabled("CONFIG_IA32_EMULATION_DEFAULT_DISABLED") {
		return []string{"ia32_emulation=1"}
	}
	return nil
}

// programs are the C programs the guest suite runs, as guest path ->
// source (relative to the checkout): the C demo of every backing, also
// built 32-bit (kmmap-demo32), and TestMemcgLimit's single-threaded SETUP.
var programs = map[string]string{
	"/kmmap/kmmap-demo":  "kmod/examples/demo.c",
	"/kmmap/kmmap-setup": "vmtests/guest/testdata/setup.c",
}

// Programs compiles programs, and the demo for the arch's 32-bit
// userland, as static binaries for arch into dir: guest path -> host path.
func Programs(root, name, dir string) (map[string]string, error) {
	a, err := arch.Lookup(name)
	if err != nil {
		return nil, err
	}
	cc, pkg := a.CC()
	type build struct{ cc, src, pkg string }
	builds := map[string]build{}
	if a.Compat32 != "" {
		builds["/kmmap/kmmap-demo32"] = build{a.Compat32, programs["/kmmap/kmmap-demo"], a.Compat32Packages}
	}
	for guest, src := range programs {
		builds[guest] = build{cc, src, pkg}
	}
	out := map[string]string{}
	for guest, b := range builds {
		bin := filepath.Join(dir, filepath.Base(guest))
		// Aligned for every page size (loadsOnEveryPageSize).
		cmd := exec.Command(b.cc, "-static", "-O2", "-Wall", "-Wextra", "-Werror", fmt.Sprintf("-Wl,-z,max-page-size=%d", maxPageSize),
			"-I", filepath.Join(root, "kmod", "include", "uapi"), "-o", bin, filepath.Join(root, b.src))
		if o, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s for %s (%s): %v\n%s(apt-get install %s)", b.src, name, strings.Join(cmd.Args, " "), err, o, b.pkg)
		}
		out[guest] = bin
	}
	img, err := ext2Image(dir)
	if err != nil {
		return nil, err
	}
	out["/kmmap/ext2.img"] = img
	return out, nil
}

// ext2Image makes the small empty ext2 file system TestPinFileWriteback
// mounts through a loop device (512 KiB: 1K blocks, 16 inodes), in dir.
// mke2fs is in /sbin, which a normal user's PATH often lacks.
func ext2Image(dir string) (string, error) {
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mke2fs", "/sbin/mke2fs"} {
			if _, serr := os.Stat(p); serr == nil {
				mke2fs, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return "", fmt.Errorf("mke2fs not found, to make the guest suite's ext2 image (apt-get install e2fsprogs)")
	}
	img := filepath.Join(dir, "ext2.img")
	cmd := exec.Command(mke2fs, "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "16", "-m", "0", img, "512")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("making the guest suite's ext2 image (%s): %v\n%s", strings.Join(cmd.Args, " "), err, o)
	}
	return img, nil
}
