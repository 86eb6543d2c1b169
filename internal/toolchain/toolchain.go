// Package toolchain provides hermetic build roots: a Debian suite's own
// compiler (and its cross compiler) debootstrapped into the cache, so that a
// module is built by the compiler major its kernel was built with and the
// suite's Kbuild tools run on the glibc they were linked against.
//
// A root is created once per (suite, packages), under a file lock, in a
// temporary directory renamed into place when debootstrap succeeded.
// Commands run in it with chroot inside a private mount namespace in which
// the cache directory is bind-mounted at its own path, so every absolute
// path under the cache means the same inside and outside.
package toolchain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/kmmap/kmmap/kernels"
)

const format = "root-v1"

// Root is a debootstrapped build root.
type Root struct {
	Suite string
	Dir   string
	cache string // bind-mounted into Dir at the same path
}

// triplet is the GNU triplet Debian's cross compiler packages use.
var triplet = map[string]string{"amd64": "x86-64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// BaseSuite is the suite whose toolchain builds a suite's kernels:
// trixie-backports kernels are built with trixie's compiler.
func BaseSuite(suite string) string {
	base, _, _ := strings.Cut(suite, "-")
	return base
}

// packages is what a root for compiler (e.g. "gcc-14") holds: the native
// compiler, cross compilers for the other arches, and what Kbuild needs to
// build external modules (make, libelf, pahole for BTF, openssl for
// sign-file's library).
func packages(compiler string) []string {
	pkgs := []string{compiler, "make", "libc6-dev", "libelf-dev", "libssl-dev", "bc", "flex", "bison", "dwarves", "kmod"}
	for arch, t := range triplet {
		if arch != runtime.GOARCH {
			pkgs = append(pkgs, compiler+"-"+t)
		}
	}
	sort.Strings(pkgs)
	return pkgs
}

// compilers lists the compiler commands a root for compiler holds.
func compilers(compiler string) []string {
	out := []string{compiler}
	for arch := range triplet {
		if prefix, _ := Cross(arch, compiler); prefix != "" {
			out = append(out, prefix+compiler)
		}
	}
	return out
}

// Cross returns CROSS_COMPILE for building arch's code on this host ("" for
// the host's own arch) and the Debian package with that compiler.
func Cross(arch, compiler string) (prefix, pkg string) {
	if arch == runtime.GOARCH {
		return "", compiler
	}
	t := triplet[arch]
	return strings.ReplaceAll(t, "x86-64", "x86_64") + "-", compiler + "-" + t
}

// Ensure returns the root for suite with compiler, creating it with
// debootstrap from mirror if the cache lacks it. Creating one needs root.
func Ensure(ctx context.Context, cache, suite, compiler, mirror string, logf func(string, ...any)) (*Root, error) {
	suite = BaseSuite(suite)
	pkgs := packages(compiler)
	h := sha256.Sum256([]byte(format + "\n" + suite + "\n" + strings.Join(pkgs, ",")))
	dir := filepath.Join(cache, "toolchains", suite+"-"+hex.EncodeToString(h[:])[:16])
	r := &Root{Suite: suite, Dir: dir, cache: cache}
	if complete(dir) {
		return r, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	lk, err := kernels.LockFile(dir + ".lock")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if complete(dir) {
		return r, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the %s toolchain root (%s) is not in the cache and creating it needs root: run `sudo make toolchains` once (or build as root)", suite, compiler)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return nil, fmt.Errorf("debootstrap not found (apt-get install debootstrap): it creates the %s toolchain root", suite)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+suite+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	logf("toolchain %s: debootstrap %s (once; about 2 minutes)", suite, strings.Join(pkgs, " "))
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(pkgs, ","), suite, tmp, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("toolchain %s: debootstrap failed: %v\n%s", suite, err, Tail(out, 30))
	}
	// debootstrap checked the suite's signed Release file; check that what
	// the builds need is really there before the root is trusted.
	for _, bin := range append(compilers(compiler), "make", "pahole") {
		if _, err := os.Stat(filepath.Join(tmp, "usr", "bin", bin)); err != nil {
			return nil, fmt.Errorf("toolchain %s: debootstrap succeeded but the root has no %s", suite, bin)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".kmmap-complete"), []byte(strings.Join(pkgs, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return r, nil
}

func complete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ".kmmap-complete"))
	return err == nil
}

// Command returns a command that runs args in the root, in workdir (a path
// under the cache, valid inside the root too). Each command has a /tmp of
// its own: two builds in one root, each make PID 1-ish in its own PID
// namespace, otherwise collide on make's jobserver fifo /tmp/GMfifo<pid>.
func (r *Root) Command(ctx context.Context, workdir string, args ...string) *exec.Cmd {
	script := `set -e
mkdir -p "$ROOT$CACHE"
mount --bind "$CACHE" "$ROOT$CACHE"
mount -t proc proc "$ROOT/proc"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
cd "$ROOT$WORKDIR"
exec chroot "$ROOT" /bin/sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "$@"`
	unshare := []string{"--mount", "--propagation", "private", "--fork", "--pid"}
	if os.Geteuid() != 0 {
		unshare = append([]string{"--map-root-user"}, unshare...)
	}
	argv := append(append(unshare, "--", "/bin/sh", "-c", script, "sh"), args...)
	cmd := exec.CommandContext(ctx, "unshare", argv...)
	cmd.Env = append(os.Environ(), "ROOT="+r.Dir, "CACHE="+r.cache, "WORKDIR="+workdir,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C")
	return cmd
}

// Tail is the last n lines of a command's output, for an error message.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// HostSuite is this machine's Debian codename (VERSION_CODENAME in
// /etc/os-release), or "" on another distribution.
func HostSuite() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// NeedsRoot reports whether k's module must be built in a toolchain root:
// always, unless this host is Debian of the very suite k was built in (then
// its own compiler and libraries are the kernel's).
// A kernel from no suite (a custom one) is built with the host's tools.
func NeedsRoot(k kernels.Kernel) bool {
	return k.Suite != "" && BaseSuite(k.Suite) != HostSuite()
}
