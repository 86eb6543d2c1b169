package vmtests

import (
	"regexp"

	"github.com/kmmap/kmmap/kernels"
)

// Module is the out-of-tree kernel module under test: what to build and
// how to load it. The harness builds it for each cell's kernel with that
// kernel's compiler (make -C <kernel tree> M=<copy of Dir> modules), finds
// the .ko in the build's modules.order, and names it by its .modinfo.
type Module struct {
	// Dir is the module's Kbuild directory (a Kbuild or Makefile with
	// obj-m). It must build one module. A relative Dir is relative to
	// the host test's directory, where go test runs it (as testdata/
	// is): "../kmod" from a host test in host/.
	Dir string
	// MakeArgs are added to make's command line (e.g. "EXTRA=1").
	MakeArgs []string
	// Params are the module's parameters at load ("debug=1 size=4").
	Params string
	// AllowWarnings lets the module build with compiler warnings; by
	// default a warning fails the cell, as a build error does.
	AllowWarnings bool
	// AllowIoctlClash lets the module define ioctl numbers the kernel's
	// registry (ioctl-number.rst) gives to another driver or to the tty
	// and socket layers; by default such a number fails every cell,
	// naming where it is defined and who has it.
	AllowIoctlClash bool
}

// Guest is the guest side of a run: a Go test package compiled for the
// guest's arch and run there once the module is loaded, as root.
type Guest struct {
	// Dir is where Package is built from ("" for the host test's
	// directory, where go test runs it), in the Go module it builds in.
	Dir string
	// Package is the guest test package, as go test -c takes it: an
	// import path, or a path relative to Dir ("./guest", "../guest").
	Package string
	// Tags are build tags for it (a guest-only package is best kept
	// behind one, so that go test ./... on the host skips it).
	Tags []string
	// Files builds the extra files the guest needs for a guest arch
	// (amd64 or arm64) into dir, returning guest path -> host path; they
	// are put in the image at those paths. An ARM program among them must
	// align its segments to 64K (-Wl,-z,max-page-size=65536), for the 16K
	// and 64K kernels: the harness refuses one that does not.
	Files func(arch, dir string) (map[string]string, error)
	// Flags are extra flags for the guest test binary on a kernel.
	Flags func(Kernel) []string
	// KernelArgs are extra kernel arguments the suite needs on a kernel.
	KernelArgs func(Kernel) []string
	// Sources are further files or directories the guest side is built
	// from (Files' sources outside Package), so that go test's cache
	// reruns the cells when they change.
	Sources []string
	// Allow are kernel log lines that look like a report but are
	// expected of this module (each fails the test it appears in
	// otherwise).
	Allow []*regexp.Regexp
}

// Kernel is what a guest spec's hooks see of a cell's kernel.
type Kernel struct {
	ID, Arch, Release string
	// PageSize is its page size in bytes.
	PageSize int
	// CPUs is how many CPUs its guest has.
	CPUs int
	// Config is its configuration.
	Config kernels.Config
	// Seed is the run's random seed (KMMAP_RANDOM_SEED), "" for the
	// suite's own default.
	Seed string
}
