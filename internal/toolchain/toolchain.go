// Package toolchain provides hermetic build roots: a Debian suite's own
// compiler (and its cross compiler) bootstrapped into the cache, so that a
// module is built by the compiler major its kernel was built with and the
// suite's Kbuild tools run on the glibc they were linked against.
//
// A root is created once per (suite, packages), under a file lock, in a
// temporary directory renamed into place when mmdebstrap succeeded; a
// normal user creates it (mmdebstrap --mode=unshare) and owns it.
// Commands run in it with chroot inside a private mount namespace in which
// the cache directory is bind-mounted at its own path, so every absolute
// path under the cache means the same inside and outside. It makes and
// runs roots; what is built in one (a kernel, a module) is its caller's.
package toolchain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
)

const format = "root-v1"

// Root is a Debian build root in the cache.
type Root struct {
	Suite string
	Dir   string
	cache string // bind-mounted into Dir at the same path
}

// BaseSuite is the suite whose toolchain builds a suite's kernels:
// trixie-backports kernels are built with trixie's compiler.
func BaseSuite(suite string) string {
	base, _, _ := strings.Cut(suite, "-")
	return base
}

// packages is what a root of suite for compiler (e.g. "gcc-14") holds to
// build for guest: the native compiler, the cross compiler of the other
// arch the harness runs on (amd64, arm64: one root builds for both), the
// cross compilers of every other arch the suite's roots build for when
// guest is one of those (a root of their own, so that adding an arch
// leaves the others' roots, and what was built in them, as it was), and
// what Kbuild needs to build external modules (make, libelf, pahole for
// BTF, openssl for sign-file's library).
func packages(suite, compiler, guest string) []string {
	pkgs := []string{compiler, "make", "libc6-dev", "libelf-dev", "libssl-dev", "bc", "flex", "bison", "dwarves", "kmod"}
	for _, a := range crossArches(suite, guest) {
		_, pkg := a.Cross(compiler)
		pkgs = append(pkgs, pkg)
	}
	sort.Strings(pkgs)
	return pkgs
}

// Group names the root a kernel of arch guest builds in, among those of
// its suite and compiler: "hosts" for amd64 and arm64, "others" for the
// rest.
func Group(guest string) string {
	if g, err := arch.Lookup(guest); err == nil && !g.Host {
		return "others"
	}
	return "hosts"
}

// crossArches are the arches a root of suite for guest cross-compiles for.
func crossArches(suite, guest string) []arch.Arch {
	g, err := arch.Lookup(guest)
	other := err == nil && !g.Host
	var out []arch.Arch
	for _, name := range arch.Names() {
		a, _ := arch.Lookup(name)
		if !a.Native() && (a.Host || other && a.InSuite(suite)) {
			out = append(out, a)
		}
	}
	return out
}

// compilers lists the compiler commands a root of suite for compiler and
// guest holds.
func compilers(suite, compiler, guest string) []string {
	out := []string{compiler}
	for _, a := range crossArches(suite, guest) {
		prefix, _ := a.Cross(compiler)
		out = append(out, prefix+compiler)
	}
	return out
}

// keyring is the Debian archive keyring mmdebstrap checks a suite's
// signed Release file against (Ubuntu's apt does not trust Debian's keys).
const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// Ensure returns the root for suite with compiler that builds for arch
// guest, creating it with
// mmdebstrap from mirror if the cache lacks it. Nobody needs to be root: a
// normal user's mmdebstrap runs in a user namespace (--mode=unshare) and
// the root is unpacked from its tarball as that user, so the user owns
// every file of it and can remove it; root makes it the same way (--mode=root).
func Ensure(ctx context.Context, cacheDir, suite, compiler, guest, mirror string, logf func(string, ...any)) (*Root, error) {
	suite = BaseSuite(suite)
	return EnsurePackages(ctx, cacheDir, suite, packages(suite, compiler, guest), append(compilers(suite, compiler, guest), "make", "pahole"), mirror, logf)
}

// EnsurePackages returns a root of suite holding pkgs, created as Ensure
// creates a compiler's; bins are the commands in /usr/bin it must have.
func EnsurePackages(ctx context.Context, cacheDir, suite string, pkgs, bins []string, mirror string, logf func(string, ...any)) (*Root, error) {
	pkgs = slices.Sorted(slices.Values(pkgs))
	h := sha256.Sum256([]byte(format + "\n" + suite + "\n" + strings.Join(pkgs, ",")))
	dir := filepath.Join(cacheDir, "toolchains", suite+"-"+hex.EncodeToString(h[:])[:16])
	r := &Root{Suite: suite, Dir: dir, cache: cacheDir}
	if os.Geteuid() != 0 {
		// Every command in a root enters it through a user namespace.
		if err := checkUserns(); err != nil {
			return nil, err
		}
	}
	if ok, err := complete(dir); ok || err != nil {
		return r, err
	}
	lk, err := cache.LockFile(dir + ".lock")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if ok, err := complete(dir); ok || err != nil {
		return r, err
	}
	if err := checkCreate(); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dir); err == nil {
		// An incomplete root from a crash mid-rename: ours to replace.
		if err := cache.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+suite+"-")
	if err != nil {
		return nil, cache.NotYours(filepath.Dir(dir), err)
	}
	defer cache.RemoveAll(tmp)
	logf("toolchain %s: mmdebstrap %s (once; about 2 minutes)", suite, strings.Join(pkgs, " "))
	if err := bootstrap(ctx, tmp, suite, mirror, pkgs); err != nil {
		return nil, fmt.Errorf("toolchain %s: %w", suite, err)
	}
	// mmdebstrap checked the suite's signed Release file; check that what
	// the builds need is really there before the root is trusted.
	for _, bin := range bins {
		if _, err := os.Stat(filepath.Join(tmp, "usr", "bin", bin)); err != nil {
			return nil, fmt.Errorf("toolchain %s: mmdebstrap succeeded but the root has no %s", suite, bin)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".kmmap-complete"), []byte(strings.Join(pkgs, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	// MkdirTemp made it 0700: a root is read by whoever shares the cache.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return r, nil
}

// bootstrap writes a minbase root of suite with pkgs into dir: mmdebstrap
// makes it as a tarball on its stdout, which tar unpacks as the caller
// (owning every file when not root). The tarball's /dev nodes are left
// out (a normal user cannot mknod): Command binds the host's /dev.
func bootstrap(ctx context.Context, dir, suite, mirror string, pkgs []string) error {
	// mmdebstrap runs in a PID namespace of its own that dies with this
	// process (Command's reason): apt, dpkg and mmdebstrap's own forks
	// with it. A normal user's is also a user namespace mapping the user
	// to root and its subordinate ids after (--map-auto, through
	// newuidmap), in which mmdebstrap --mode=unshare, seeing root, makes
	// no user namespace of its own; left to make one, a killed run left
	// two of its processes blocked for good.
	// (util-linux before 2.38 has no --map-auto: mmdebstrap then runs
	// as before, untied.)
	mode, argv := "--mode=root", []string{"unshare", "--pid", "--fork", "--kill-child", "--"}
	if os.Geteuid() != 0 {
		mode, argv = "--mode=unshare", append([]string{"unshare", "--map-root-user", "--map-auto"}, argv[1:]...)
		if !mapAuto() {
			argv = nil
		}
	}
	// Release files that say how long they are valid (sid's, a week) are
	// checked for their signature, not their age: a mirror may be a
	// snapshot of the archive.
	argv = append(argv, "mmdebstrap", mode, "--variant=minbase", "--format=tar", `--aptopt=Acquire::Check-Valid-Until "false"`,
		"--keyring="+keyring, "--include="+strings.Join(pkgs, ","), suite, "-", mirror)
	mm := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var mmErr, tarErr bytes.Buffer
	mm.Stderr = &mmErr
	tar := lifeline.Tie(exec.CommandContext(ctx, "tar", "-x", "-C", dir, "--exclude=./dev/*"))
	lifeline.Tie(mm)
	tar.Stderr = &tarErr
	pipe, err := mm.StdoutPipe()
	if err != nil {
		return err
	}
	tar.Stdin = pipe
	if err := mm.Start(); err != nil {
		return err
	}
	if err := tar.Run(); err != nil {
		mm.Process.Kill()
		mm.Wait()
		return fmt.Errorf("unpacking mmdebstrap's tarball: %v\n%s", err, Tail(tarErr.Bytes(), 10))
	}
	if err := mm.Wait(); err != nil {
		return fmt.Errorf("mmdebstrap %s failed: %v\n%s", mode, err, Tail(mmErr.Bytes(), 30))
	}
	return nil
}

// mapAuto reports whether this machine's unshare maps subordinate ids
// itself (--map-auto, util-linux 2.38).
var mapAuto = sync.OnceValue(func() bool {
	out, _ := exec.Command("unshare", "--help").Output()
	return bytes.Contains(out, []byte("--map-auto"))
})

// checkCreate reports what this machine lacks to create a root as this
// user: mmdebstrap, and for a normal user the subordinate ids its
// --mode=unshare maps (newuidmap from uidmap).
func checkCreate() error {
	for cmd, pkg := range map[string]string{"mmdebstrap": "mmdebstrap", "tar": "tar"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return fmt.Errorf("%s not found (apt-get install %s, or `make deps`): it creates the toolchain roots", cmd, pkg)
		}
	}
	if _, err := os.Stat(keyring); err != nil {
		return fmt.Errorf("%s not found (apt-get install debian-archive-keyring): mmdebstrap checks the suites' signatures with it", keyring)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	for _, cmd := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(cmd); err != nil {
			if _, err := os.Stat("/usr/bin/" + cmd); err != nil {
				return fmt.Errorf("%s not found (apt-get install uidmap, or `make deps`): mmdebstrap --mode=unshare needs it to create a toolchain root as a normal user", cmd)
			}
		}
	}
	u, err := user.Current()
	if err != nil {
		return err
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if !hasSubids(f, u.Username, u.Uid) {
			return fmt.Errorf("%s has no range for %s: mmdebstrap --mode=unshare maps one to create a toolchain root as a normal user. "+
				"adduser and useradd add one for new users; for this one, once, as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s", f, u.Username, u.Username)
		}
	}
	return nil
}

// hasSubids reports whether the subordinate id file f (/etc/subuid's
// format: name-or-id:first:count) gives name or uid a range.
func hasSubids(f, name, uid string) bool {
	b, err := os.ReadFile(f)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		who, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		if ok && (who == name || who == uid) && !strings.HasSuffix(rest, ":0") {
			return true
		}
	}
	return false
}

// checkUserns reports, once per process, whether this user can do what
// Command does.
var checkUserns = sync.OnceValue(func() error {
	// What Command does: a user namespace mapping this user to root, with
	// a mount namespace in which it mounts. AppArmor's restriction lets
	// the unshare succeed and fails the mount.
	out, err := exec.Command("unshare", "--map-root-user", "--mount", "--propagation", "private",
		"--", "/bin/sh", "-c", "mount -t tmpfs kmmap /tmp").CombinedOutput()
	if err == nil {
		return nil
	}
	return fmt.Errorf("the toolchain roots are entered through a user namespace, and this user cannot create one (%v: %s). %s",
		err, strings.TrimSpace(string(out)), usernsAdvice("/proc/sys"))
})

// usernsAdvice names the setting under procSys (normally /proc/sys) that
// keeps unprivileged user namespaces off, and how to turn it on.
func usernsAdvice(procSys string) string {
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(procSys, name))
		return strings.TrimSpace(string(b))
	}
	var why []string
	if read("kernel/apparmor_restrict_unprivileged_userns") == "1" {
		why = append(why, "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later): `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile with `userns,` for unshare and mmdebstrap")
	}
	if read("kernel/unprivileged_userns_clone") == "0" {
		why = append(why, "unprivileged user namespaces are off: `sudo sysctl kernel.unprivileged_userns_clone=1`")
	}
	if read("user/max_user_namespaces") == "0" {
		why = append(why, "user namespaces are limited to none: `sudo sysctl user.max_user_namespaces=10000`")
	}
	if len(why) == 0 {
		return "No sysctl forbids them (kernel.apparmor_restrict_unprivileged_userns, kernel.unprivileged_userns_clone, user.max_user_namespaces): check that the kernel has CONFIG_USER_NS and that no seccomp filter (a container's) forbids unshare(CLONE_NEWUSER)."
	}
	return strings.Join(why, "; ") + " (once; add it to /etc/sysctl.d to keep it)."
}

// complete reports whether dir is a finished root. A root this user cannot
// read (an older kmmap made roots as root, mode 0700) is an error that says
// what to do, not a root to make again over it.
func complete(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, ".kmmap-complete"))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err == nil, nil
	}
	return false, cache.NotYours(dir, err)
}

// Command returns a command that runs args in the root, in workdir (a path
// under the cache, valid inside the root too). Each command has a /tmp of
// its own: two builds in one root, each make PID 1-ish in its own PID
// namespace, otherwise collide on make's jobserver fifo /tmp/GMfifo<pid>.
// That tmpfs is mounted before the cache is bound, and the cache is bound
// from the directory the script stands in (which no mount hides): a cache
// under /tmp (KMMAP_CACHE=/tmp/...) stays visible.
func (r *Root) Command(ctx context.Context, workdir string, args ...string) *exec.Cmd {
	script := `set -e
cd "$CACHE"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
mkdir -p "$ROOT$CACHE"
mount --no-canonicalize --bind . "$ROOT$CACHE"
mount --rbind /dev "$ROOT/dev"
mount -t proc proc "$ROOT/proc"
cd "$ROOT$WORKDIR"
exec chroot "$ROOT" /bin/sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "$@"`
	// --kill-child: when unshare dies (it dies with this process: Tie),
	// the namespace's first process does, and with it every process in
	// the namespace - make and each compiler it runs.
	unshare := []string{"--mount", "--propagation", "private", "--fork", "--pid", "--kill-child"}
	if os.Geteuid() != 0 {
		unshare = append([]string{"--map-root-user"}, unshare...)
	}
	argv := append(append(unshare, "--", "/bin/sh", "-c", script, "sh"), args...)
	cmd := lifeline.Tie(exec.CommandContext(ctx, "unshare", argv...))
	cmd.Env = append(MakeEnv(os.Environ()), "ROOT="+r.Dir, "CACHE="+r.cache, "WORKDIR="+workdir,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C")
	return cmd
}

// MakeEnv is env without what an outer make hands its children (a
// harness run under make: make test, make bench, a CI's make): with them
// a kernel's or a module's make would join that make's jobserver, number
// itself a sub-make and print "make[2]: Entering directory" into output
// read as data (make -s kernelversion).
func MakeEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "MAKEFLAGS", "MFLAGS", "GNUMAKEFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR":
			return true
		}
		return false
	})
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
