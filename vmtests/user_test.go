package vmtests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// TestCellJobAsUser is the workflow's job as the normal user a laptop or a
// GitHub runner has: run as root (as CI here is), it creates a user with
// an empty kmmap cache (and Go modules and a Go build cache: seedGo),
// copies the checkout to its home and, as that user, runs .ci/cell (the
// script the workflow's vmtest job runs) for a cell that needs a
// toolchain root, from that empty cache. Then the rest of what a user
// runs: `kmmap bench` and a custom kernel (gdb is in .ci/cell; `kmmap
// shell` is interactive and is not driven here: an automated driver over
// u-root's line editor hung intermittently). Before all that, a
// cache an older kmmap left (toolchains made with sudo) must be explained.
func TestCellJobAsUser(t *testing.T) {
	bootsVMs(t)
	if os.Geteuid() != 0 {
		t.Skip("this run is a normal user's already; the test creates one only when run as root, as CI is")
	}
	// Most of it is a new user's waits (downloads, mmdebstrap, the
	// first boots): it runs beside the matrix, not after it.
	t.Parallel()
	root, lock := loadLock(t)
	// The newest amd64 distribution cell that needs a toolchain root, and
	// the newest that needs none (the host's suite: 6.1 on bookworm).
	var cells []kernels.Kernel
	for _, needsRoot := range []bool{true, false} {
		for _, k := range slices.Backward(lock.Kernels) {
			if selected(t, k.ID) && k.Arch == "amd64" && !k.FromSource() && toolchain.NeedsRoot(k) == needsRoot {
				cells = append(cells, k)
				break
			}
		}
	}
	if len(cells) == 0 {
		t.Skipf("KMMAP_CELLS=%q selects no amd64 distribution cell", os.Getenv("KMMAP_CELLS"))
	}
	u := newUser(t)
	u.seedGo(t, filepath.Join(kmmapHarness(t).CacheDir(), "tests", "user-go"))
	work := filepath.Join(u.home, "kmmap")
	copyCheckout(t, root, work)
	u.chownAll(t, u.home)
	cache := filepath.Join(work, ".kmmap-cache") // as the workflow's KMMAP_CACHE

	t.Run("older-cache", func(t *testing.T) {
		// `sudo make toolchains` of an older kmmap left a root-owned
		// toolchains/ in the user's cache.
		old := filepath.Join(cache, "toolchains")
		if err := os.MkdirAll(old, 0o755); err != nil {
			t.Fatal(err)
		}
		u.chownAll(t, cache)
		if err := os.Chown(old, 0, 0); err != nil {
			t.Fatal(err)
		}
		out, err := u.run(t, work, "go", "run", "./cmd/kmmap", "kernels", "toolchains", cells[0].ID)
		if err == nil || !strings.Contains(out, "sudo rm -rf "+old) {
			t.Errorf("kmmap kernels toolchains over a root-owned %s: %v, want an error naming `sudo rm -rf %s`:\n%s", old, err, old, tail(out, 20))
		}
		if err := os.RemoveAll(old); err != nil { // what the error says to do
			t.Fatal(err)
		}
	})

	// The workflow's job for the first cell (one that needs a toolchain
	// root, made as the user); the other, which needs none, is the
	// custom kernel's below: its kernel is only fetched into the cache.
	for _, k := range cells[:1] {
		cell := k.ID
		t.Run("job/"+cell, func(t *testing.T) {
			out, err := u.run(t, work, ".ci/cell", cell)
			if err != nil {
				t.Fatalf(".ci/cell %s as %s: %v\n%s", cell, u.name, err, tail(out, 60))
			}
			passed, ran := jobVerdict(t, filepath.Join(work, "test-"+cell+".json"), "TestGuest/"+cell)
			if !passed || ran < 50 {
				t.Errorf(".ci/cell %s as %s: TestGuest/%s passed=%v with %d guest tests, want a pass of the whole suite\n%s", cell, u.name, cell, passed, ran, tail(out, 40))
			}
		})
	}
	if len(cells) > 1 {
		t.Run("fetch/"+cells[1].ID, func(t *testing.T) {
			if out, err := u.run(t, work, "go", "run", "./cmd/kmmap", "kernels", "fetch", cells[1].ID); err != nil {
				t.Fatalf("kmmap kernels fetch %s as %s: %v\n%s", cells[1].ID, u.name, err, tail(out, 30))
			}
		})
	}
	t.Run("cache-owner", func(t *testing.T) {
		// Everything the job made is the user's to keep or remove.
		n := 0
		filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if uid := info.Sys().(*syscall.Stat_t).Uid; uid != u.uid && n < 5 {
				n++
				t.Errorf("%s is owned by uid %d, not by %s (uid %d)", p, uid, u.name, u.uid)
			}
			return nil
		})
		if toolchain.NeedsRoot(cells[0]) {
			roots, _ := filepath.Glob(filepath.Join(cache, "toolchains", "*", ".kmmap-complete"))
			if len(roots) == 0 {
				t.Errorf("no toolchain root in %s after the %s job", cache, cells[0].ID)
			}
		}
	})

	t.Run("bench", func(t *testing.T) {
		md := filepath.Join(work, "bench.md")
		out, err := u.run(t, work, "go", "run", "./cmd/kmmap", "bench", "-parts", "cells", "-runs", "1", "-suite", "^TestSetup$", "-cells", cells[0].ID, "-o", md)
		if err != nil {
			t.Fatalf("kmmap bench as %s: %v\n%s", u.name, err, tail(out, 30))
		}
		if b, err := os.ReadFile(md); err != nil || !strings.Contains(string(b), cells[0].ID) {
			t.Errorf("kmmap bench wrote no row for %s to %s: %v\n%s", cells[0].ID, md, err, b)
		}
	})

	t.Run("custom", func(t *testing.T) {
		// The custom-kernel path, with the cell the host's compiler builds
		// for (one with no toolchain root) standing in for the user's tree.
		k := cells[len(cells)-1]
		id := k.ID
		if toolchain.NeedsRoot(k) {
			t.Skipf("every selected amd64 cell needs a toolchain root; a custom kernel is built with this host's compiler")
		}
		trees, _ := filepath.Glob(filepath.Join(cache, "kernels", id+"-*", "tree.json"))
		if len(trees) != 1 {
			t.Fatalf("want one unpacked %s in the user's cache, have %v", id, trees)
		}
		var tree kernels.Tree
		b, err := os.ReadFile(trees[0])
		if err == nil {
			err = json.Unmarshal(b, &tree)
		}
		if err != nil {
			t.Fatal(err)
		}
		// A few guest tests (a C helper among them): the whole suite ran
		// as this user in the job; what is new here is the module built
		// against the given tree and the kernel booted as cell custom.
		guest := []string{"TestSetup", "TestCDemo", "TestRing"}
		out, err := u.run(t, work, "env", "KMMAP_KERNEL="+tree.Vmlinuz, "KMMAP_KDIR="+tree.KDir, "KMMAP_KMODS="+tree.ModulesDir,
			"go", "test", "-count=1", "-v", "-run", "^TestGuest$/^custom$/^("+strings.Join(guest, "|")+")$", "./vmtests")
		if err != nil {
			t.Errorf("go test with KMMAP_KERNEL and KMMAP_KDIR as %s: %v\n%s", u.name, err, tail(out, 40))
		}
		for _, g := range guest {
			if !strings.Contains(out, "--- PASS: TestGuest/custom/"+g+" ") {
				t.Errorf("go test with KMMAP_KERNEL and KMMAP_KDIR as %s: no pass of TestGuest/custom/%s\n%s", u.name, g, tail(out, 40))
			}
		}
	})
}

// testUser is a normal user made for one test.
type testUser struct {
	name, home string
	uid, gid   uint32
	env        []string
}

// newUser adds a user (with the subordinate ids useradd gives a new user)
// whose home is a fresh directory, and deletes both when t ends.
func newUser(t *testing.T) *testUser {
	t.Helper()
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Fatal("useradd not found (apt-get install passwd): the test runs the job as a user it adds")
	}
	home, err := os.MkdirTemp("", "kmmap-user-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	name := fmt.Sprintf("kmmapci%d", os.Getpid())
	if out, err := exec.Command("useradd", "--home-dir", home, "--shell", "/bin/sh", "--user-group", name).CombinedOutput(); err != nil {
		os.RemoveAll(home)
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		exec.Command("pkill", "-KILL", "-u", name).Run()
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
		if err := cache.RemoveAll(home); err != nil {
			t.Errorf("remove %s's home: %v", name, err)
		}
	})
	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pw.Uid)
	gid, _ := strconv.Atoi(pw.Gid)
	u := &testUser{name: name, home: home, uid: uint32(uid), gid: uint32(gid)}

	// What a user's login gives it, Go where root has it, and the Go
	// module proxy and Debian mirror this machine is configured with.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	u.env = []string{"HOME=" + home, "USER=" + name, "LOGNAME=" + name, "LANG=C.UTF-8",
		"PATH=" + filepath.Dir(goBin) + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "GOTOOLCHAIN=local"}
	goVars := []string{"GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOFLAGS"}
	out, err := exec.Command(goBin, append([]string{"env"}, goVars...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if v != "" {
			u.env = append(u.env, goVars[i]+"="+v)
		}
	}
	for _, k := range []string{kernels.MirrorEnv, "KMMAP_VM_TIMEOUT"} {
		if v, ok := os.LookupEnv(k); ok {
			u.env = append(u.env, k+"="+v)
		}
	}
	return u
}

// seedGo gives u what the test does not prove and need not redo, so that
// the user's own kmmap cache (under test) is all it starts without:
//   - the Go modules root has, served from disk: a file:// GOPROXY over a
//     copy of root's module download cache, ahead of the configured proxy
//     (go still verifies each against go.sum);
//   - the Go module and build caches the test users of earlier runs left
//     in kept (kmmap's cache, tests/user-go), lent for the test and taken
//     back when it ends: compiling kmmap, u-root and the guest suite again
//     was a third of the test's CPU. The user's builds run with -trimpath,
//     so that no entry depends on the directory the checkout is in (a new
//     home each run). Kept caches another run holds now, or on another file
//     system, are not lent: the user starts without them and leaves its own.
func (u *testUser) seedGo(t *testing.T, kept string) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	proxy := filepath.Join(u.home, ".goproxy")
	if download := filepath.Join(strings.TrimSpace(string(out)), "cache", "download"); dirExists(download) {
		if out, err := exec.Command("cp", "-r", download, proxy).CombinedOutput(); err != nil {
			t.Fatalf("seeding %s's Go module proxy: cp -r %s %s: %v\n%s", u.name, download, proxy, err, out)
		}
		upstream := "off"
		for i, e := range u.env { // newUser's, from root's go env
			if p, ok := strings.CutPrefix(e, "GOPROXY="); ok {
				upstream = p
				u.env = slices.Delete(u.env, i, i+1)
				break
			}
		}
		u.env = append(u.env, "GOPROXY=file://"+proxy+","+upstream)
	}

	flags := "-trimpath"
	for i, e := range u.env {
		if f, ok := strings.CutPrefix(e, "GOFLAGS="); ok {
			flags = f + " " + flags
			u.env = slices.Delete(u.env, i, i+1)
			break
		}
	}
	u.env = append(u.env, "GOFLAGS="+flags)
	for _, c := range []struct{ name, env, dir string }{
		{"build", "GOCACHE", filepath.Join(u.home, ".cache", "go-build")},
		{"mod", "GOMODCACHE", filepath.Join(u.home, "go", "pkg", "mod")},
	} {
		u.env = append(u.env, c.env+"="+c.dir)
		if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
			t.Fatal(err)
		}
		from := filepath.Join(kept, c.name)
		switch err := os.Rename(from, c.dir); {
		case err == nil:
			u.chownAll(t, c.dir)
		case errors.Is(err, fs.ErrNotExist):
			t.Logf("no Go %s cache kept in %s (a first run, or another run has it): %s starts without", c.name, kept, u.name)
		default:
			t.Logf("the Go %s cache kept in %s is not lent to %s: %v", c.name, kept, u.name, err)
		}
		t.Cleanup(func() {
			// Taken back once the user's processes are gone (root's
			// again); the newest run's replaces what another left.
			exec.Command("pkill", "-KILL", "-u", u.name).Run()
			if !dirExists(c.dir) {
				return
			}
			err := filepath.WalkDir(c.dir, func(p string, _ fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Lchown(p, 0, 0)
			})
			if err == nil {
				err = os.MkdirAll(kept, 0o755)
			}
			if err == nil {
				err = cache.RemoveAll(from)
			}
			if err == nil {
				err = os.Rename(c.dir, from)
			}
			if err != nil {
				t.Logf("keeping %s's Go %s cache for the next run: %v", u.name, c.name, err)
			}
		})
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// command is name with args run as u in dir, with the cache the
// workflow's job uses (dir/.kmmap-cache).
func (u *testUser) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(u.env, cache.Env+"="+filepath.Join(dir, ".kmmap-cache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}},
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL, // dies with the test (set after the uid change)
	}
	return cmd
}

// run runs a command as u and returns its output; a command still running
// after 40 minutes is killed.
func (u *testUser) run(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	cmd := u.command(dir, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(40*time.Minute, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err := cmd.Wait()
	timer.Stop()
	t.Logf("as %s: %s %s: %v in %s", u.name, name, strings.Join(args, " "), err, time.Since(start).Round(time.Second))
	return out.String(), err
}

// chownAll gives u everything under dir.
func (u *testUser) chownAll(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(u.uid), int(u.gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyCheckout copies the files git knows in root (tracked, and new ones
// not ignored: the working tree under test) to dst.
func copyCheckout(t *testing.T, root, dst string) {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files in %s (the test copies the checkout's files): %v", root, err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the working tree
		}
		to := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(l, to)
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(to, b, info.Mode().Perm())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// jobVerdict reads a go test -json stream and reports whether test passed
// and how many of its subtests ran.
func jobVerdict(t *testing.T, path, test string) (passed bool, ran int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the job wrote no test stream: %v", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	for {
		var e struct{ Action, Test string }
		if err := dec.Decode(&e); err != nil {
			return passed, ran
		}
		switch {
		case e.Test == test && e.Action == "pass":
			passed = true
		case strings.HasPrefix(e.Test, test+"/") && (e.Action == "pass" || e.Action == "fail"):
			ran++
		}
	}
}

func tail(s string, n int) string { return toolchain.Tail([]byte(s), n) }
