// Package kernels resolves, fetches, verifies and caches the pinned Debian
// kernels that kmmap is tested on.
//
// The pins live in kernels.lock (JSON, one kernel per cell of the matrix).
// Every .deb is named by package, version and SHA-256; nothing is used before
// its hash has been checked. It owns the lock, the downloads and the
// kernels' entries in the cache; it boots nothing, and the cache's
// primitives are package cache's.
package kernels

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/kmmap/kmmap/internal/cache"
)

// Roles a package plays in a kernel cell.
const (
	RoleImage   = "image"   // the kernel image, its config and its modules
	RoleHeaders = "headers" // linux-headers-<abi>-<flavour> and -common
	RoleKbuild  = "kbuild"  // linux-kbuild-<series>, one per host architecture
	RoleSource  = "source"  // linux-source-<series>, for a kernel built here
)

// Lock is the parsed kernels.lock file.
type Lock struct {
	Comment string   `json:"comment,omitempty"`
	Kernels []Kernel `json:"kernels"`
	// Checkpatch pins the kernel source package checkpatch.pl comes from.
	Checkpatch *Tool `json:"checkpatch,omitempty"`
}

// Kernel is one pinned kernel: a cell of the test matrix.
type Kernel struct {
	// ID names the cell, e.g. "6.1-amd64".
	ID string `json:"id"`
	// Arch is the Debian (and Go) architecture of the guest.
	Arch string `json:"arch"`
	// Suite is the Debian suite the packages come from.
	Suite string `json:"suite"`
	// Series is the kernel series, e.g. "6.1"; with Flavour it is what
	// update resolves to the newest ABI the suite serves.
	Series  string `json:"series"`
	Flavour string `json:"flavour"`
	// Release is the kernel's `uname -r`.
	Release string `json:"release"`
	// Compiler is the C compiler the kernel was built with, as its headers
	// name it (CC in .kernelvariables).
	Compiler string `json:"compiler"`
	// GuestModules are the kernel's own modules the guest needs loaded
	// before the harness can talk to it, and those a guest test needs
	// (loop and ext4 on the amd64 distribution cells, with crc32c where
	// ext4 asks the crypto API for it: TestPinFileWriteback's file
	// system); dependencies are resolved from each module's .modinfo.
	GuestModules []string `json:"guest_modules"`
	// Config lists the config fragments (paths relative to the lock's
	// directory) a kernel built from its linux-source package is
	// configured with, on top of allnoconfig. Empty for Debian's own
	// kernels.
	Config []string `json:"config,omitempty"`
	// Make are variables on the make command line of a kernel built from
	// source, e.g. KCSAN_SANITIZE=n: no object of the kernel instrumented
	// for KCSAN, so that its sampling lands on the module's accesses (the
	// module is built apart, instrumented).
	Make []string `json:"make,omitempty"`
	// Cmdline is what this cell always adds to the guest's kernel
	// command line, e.g. init_on_alloc=0 on one distribution cell per
	// arch: Debian's kernels zero every allocation by default, which would
	// hide a backing that forgets to; movablecore= on the cells whose
	// long-term pins must move pages out of ZONE_MOVABLE.
	Cmdline []string `json:"cmdline,omitempty"`
	// Extra: the cell is not in the default selection (KMMAP_CELLS unset):
	// it runs when named, with KMMAP_CELLS=all (make vmtests) and in CI's
	// matrix, not in make test, whose time budget it would break (none
	// is extra today: the ppc64el, s390x and riscv64 cells fit).
	Extra bool `json:"extra,omitempty"`
	// CPUs is how many CPUs the cell's guest gets (1 to 8); 0 is one for
	// a Debian kernel and two for one built from source. Each vCPU is a
	// host thread under TCG: a second one costs the matrix time (see
	// docs/matrix.md), so one distribution cell per arch has two, for the
	// bugs only two CPUs show on a kernel as Debian ships it.
	CPUs     int       `json:"cpus,omitempty"`
	Packages []Package `json:"packages"`

	// dir is the lock file's directory, where Config is read from.
	dir string
}

// FromSource reports whether k is built here from a pinned source package
// (a debug cell) rather than unpacked from Debian's binary packages.
func (k Kernel) FromSource() bool { return len(k.Config) > 0 }

// ConfigFragments returns the paths of k's config fragments.
func (k Kernel) ConfigFragments() []string {
	out := make([]string, len(k.Config))
	for i, c := range k.Config {
		out[i] = filepath.Join(k.dir, c)
	}
	return out
}

// Package is one pinned .deb.
type Package struct {
	Role     string `json:"role"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Arch     string `json:"arch"`
	Filename string `json:"filename"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
}

// LoadLock reads and checks a lock file.
func LoadLock(path string) (*Lock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel lock: %w", err)
	}
	var l Lock
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: not a valid kernel lock: %w", path, err)
	}
	if err := l.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	for i := range l.Kernels {
		l.Kernels[i].dir = abs
	}
	return &l, nil
}

// Save writes the lock atomically.
func (l *Lock) Save(path string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return cache.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

func (l *Lock) check() error {
	seen := map[string]bool{}
	for _, k := range l.Kernels {
		if k.ID == "" || k.Arch == "" || k.Suite == "" || k.Series == "" || k.Flavour == "" {
			return fmt.Errorf("kernel %q: id, arch, suite, series and flavour are required", k.ID)
		}
		if seen[k.ID] {
			return fmt.Errorf("kernel %q is listed twice", k.ID)
		}
		if k.CPUs < 0 || k.CPUs > 8 {
			return fmt.Errorf("kernel %s: cpus %d: from 1 to 8 (0: the default)", k.ID, k.CPUs)
		}
		seen[k.ID] = true
		for _, p := range k.Packages {
			if len(p.SHA256) != 64 || p.Filename == "" || p.Version == "" {
				return fmt.Errorf("kernel %s: package %s: needs version, filename and a 64-digit sha256", k.ID, p.Name)
			}
			if (p.Role == RoleSource) != k.FromSource() {
				return fmt.Errorf("kernel %s: package %s: a kernel built from source (with \"config\" fragments) has exactly one %q package and nothing else", k.ID, p.Name, RoleSource)
			}
		}
		if k.FromSource() && len(k.Packages) > 1 {
			return fmt.Errorf("kernel %s: a kernel built from source pins one %q package, not %d packages", k.ID, RoleSource, len(k.Packages))
		}
	}
	if t := l.Checkpatch; t != nil && t.Package.Name != "" && len(t.Package.SHA256) != 64 {
		return fmt.Errorf("checkpatch: package %s needs a 64-digit sha256", t.Package.Name)
	}
	return nil
}

// pinned lists every package the lock pins, kernels' and tools'.
func (l *Lock) pinned() []Package {
	var out []Package
	for _, k := range l.Kernels {
		out = append(out, k.Packages...)
	}
	if l.Checkpatch != nil && l.Checkpatch.Package.Name != "" {
		out = append(out, l.Checkpatch.Package)
	}
	return out
}

// Kernel returns the kernel with the given ID.
func (l *Lock) Kernel(id string) (Kernel, error) {
	for _, k := range l.Kernels {
		if k.ID == id {
			return k, nil
		}
	}
	ids := make([]string, 0, len(l.Kernels))
	for _, k := range l.Kernels {
		ids = append(ids, k.ID)
	}
	return Kernel{}, fmt.Errorf("kernel %q is not in the lock (have: %s)", id, strings.Join(ids, ", "))
}

// IDs lists the kernel IDs in lock order.
func (l *Lock) IDs() []string {
	var ids []string
	for _, k := range l.Kernels {
		ids = append(ids, k.ID)
	}
	return ids
}

// packagesFor returns the packages to fetch for a build host of hostArch:
// every image and headers package, and the kbuild package for that host.
func (k Kernel) packagesFor(hostArch string) ([]Package, error) {
	if k.FromSource() {
		if len(k.Packages) != 1 {
			return nil, fmt.Errorf("kernel %s: the lock pins no %s package: run `go run ./cmd/kmmap kernels update`", k.ID, RoleSource)
		}
		return k.Packages, nil
	}
	var out []Package
	haveKbuild := false
	for _, p := range k.Packages {
		if p.Role == RoleKbuild {
			if p.Arch != hostArch {
				continue
			}
			haveKbuild = true
		}
		out = append(out, p)
	}
	if !haveKbuild {
		return nil, fmt.Errorf("kernel %s: the lock has no %s package for a %s build host", k.ID, RoleKbuild, hostArch)
	}
	if !slices.ContainsFunc(out, func(p Package) bool { return p.Role == RoleImage }) {
		return nil, fmt.Errorf("kernel %s: the lock has no %s package", k.ID, RoleImage)
	}
	return out, nil
}

// HostArch is the Debian architecture of this build host.
func HostArch() string { return runtime.GOARCH }

// DefaultLockPath finds kernels/kernels.lock from the working directory up.
func DefaultLockPath() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "kernels", "kernels.lock")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kernels/kernels.lock not found above the working directory; run from the kmmap checkout or set KMMAP_LOCK")
		}
		dir = parent
	}
}

// Tool is a pinned Debian package a check needs: linux-source-<series>,
// which holds the kernel's scripts/checkpatch.pl and its memory model.
type Tool struct {
	Suite   string  `json:"suite"`
	Series  string  `json:"series"`
	Package Package `json:"package"`
}
