// Package initramfs builds the guest's initramfs: a u-root image holding
// u-root's init, the guest agent (as uinit) and test2json, built once per
// architecture and cached by content hash; and per cell, a small cpio
// appended to it with the kernel's own modules and the agent's manifest.
// The guest test binary and the suite's files are not in it: they change
// with every edit of a guest test, so the host sends them with each run
// (event.WriteFiles) and the image, and a snapshot of its boot, stay.
package initramfs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"
)

const (
	agentPkg = "github.com/kmmap/kmmap/initramfs/agent"
	shPkg    = "github.com/kmmap/kmmap/initramfs/sh"
)

// GuestTestPath is where the guest test binary lives in the guest.
const GuestTestPath = "/kmmap/guest.test"

// Base returns a cached u-root initramfs for arch holding the agent, in
// cacheDir. srcRoot is kmmap's module root (its go.mod), where the agent and
// u-root are built; the cache key covers go.mod, go.sum, the agent's
// sources and the Go version, so any change to them rebuilds it.
func Base(arch, srcRoot, cacheDir string, logf func(string, ...any)) (string, error) {
	key, err := baseKey(arch, srcRoot)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(cacheDir, "initramfs", arch+"-"+key+".cpio")
	return cache.Build(dst, func(tmpDir string) (string, error) {
		out := filepath.Join(tmpDir, "initramfs.cpio")
		logf("initramfs %s: building u-root image", arch)
		l := llog.New(slog.LevelWarn, func(format string, args ...any) { logf("initramfs %s: "+format, append([]any{arch}, args...)...) })
		env, err := goEnv(arch, srcRoot)
		if err != nil {
			return "", err
		}
		if err := tieGo(env, tmpDir); err != nil {
			return "", err
		}
		err = uimage.Create(l,
			uimage.WithReplaceEnv(env),
			uimage.WithBusyboxCommands(append([]string{"github.com/u-root/u-root/cmds/core/init", agentPkg, shPkg}, shellCommands()...)...),
			uimage.WithBinaryCommands("cmd/test2json"),
			uimage.WithInit("init"),
			uimage.WithUinit("agent"),
			uimage.WithCPIOOutput(out),
			uimage.WithTempDir(tmpDir),
		)
		if err != nil {
			return "", fmt.Errorf("initramfs %s: %w", arch, err)
		}
		return out, nil
	})
}

// goEnv is the Go environment the image is built in for arch: the go
// command on PATH, in srcRoot. gobusybox takes GOROOT from the running
// program (go/build's default), which a program built with -trimpath (a
// user's GOFLAGS=-trimpath) does not know: then from that go command.
func goEnv(arch, srcRoot string) (*golang.Environ, error) {
	env := golang.Default(golang.DisableCGO(), golang.WithGOARCH(arch), golang.WithWorkingDir(srcRoot))
	if env.GOROOT == "" {
		out, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			return nil, fmt.Errorf("initramfs %s: this program does not know GOROOT (built with -trimpath) and `go env GOROOT` failed: %w (is go on PATH?)", arch, err)
		}
		env.GOROOT = strings.TrimSpace(string(out))
	}
	return env, nil
}

// tieGo makes every go command the image build runs die with this
// process (internal/lifeline): gobusybox starts them with an exec.Cmd of
// its own, so env's compiler becomes a script in dir that execs go behind
// setpriv. A killed run's cold image build otherwise went on compiling
// for minutes.
//
// The script also drops the -a gobusybox always gives `go build` (a
// GOPATH-era guard against stale installed packages): it rebuilt the
// standard library and every dependency on each image build, most of the
// build's time. Go's build cache is keyed by content and the build is
// -trimpath, so what it reuses is what -a would rebuild: the image comes
// out byte for byte the same.
func tieGo(env *golang.Environ, dir string) error {
	prefix, err := lifeline.Prefix()
	if err != nil {
		return err
	}
	goBin := filepath.Join(env.GOROOT, "bin", "go")
	if env.GOROOT == "" {
		if goBin, err = exec.LookPath("go"); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	var q []string
	for _, a := range append(prefix, goBin) {
		q = append(q, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	script := filepath.Join(dir, "go")
	body := "#!/bin/sh\n" +
		"# gobusybox's compiler: tied to its run, without go build's -a\n" +
		`for a; do shift; [ "$a" = -a ] || set -- "$@" "$a"; done` + "\n" +
		"exec " + strings.Join(q, " ") + ` "$@"` + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return err
	}
	env.Compiler.Path = script
	return nil
}

// shellCommands are the u-root commands `make shell` offers beside gosh.
func shellCommands() []string {
	var out []string
	for _, c := range []string{"gosh", "cat", "cp", "dmesg", "echo", "grep", "head", "hexdump", "insmod",
		"ls", "lsmod", "mkdir", "mount", "poweroff", "ps", "rm", "rmmod", "sleep", "tail", "uname"} {
		out = append(out, "github.com/u-root/u-root/cmds/core/"+c)
	}
	return out
}

// baseKey hashes what goes into the base image: go.mod, go.sum and the
// agent's sources.
func baseKey(arch, srcRoot string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "initramfs-v3\n%s\n%s\n", arch, runtime.Version())
	files := []string{filepath.Join(srcRoot, "go.mod"), filepath.Join(srcRoot, "go.sum")}
	fixed := len(files)
	err := filepath.WalkDir(filepath.Join(srcRoot, "initramfs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files[fixed:])
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return "", fmt.Errorf("initramfs key: %w", err)
		}
		fmt.Fprintf(h, "%s\n", filepath.Base(f))
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// CellSpec is what one cell adds to the base image: only what the boot
// to the agent's ready point needs, the same for every run of the cell
// (what a run does is its event.Job, sent over event.ModulePort), so
// that one snapshot of the booted guest serves every run.
type CellSpec struct {
	Modules []string // the kernel's own modules, loaded in this order
}

// Cell writes dst: the base image followed by a cpio archive with the
// spec's modules and the agent's manifest. The kernel unpacks
// concatenated archives in order, so one base serves every cell of an
// arch. The module under test is not in it: the host sends it over
// event.ModulePort once built, while the guest boots.
func Cell(dst, base string, spec CellSpec) error {
	m := event.Manifest{Kmod: "/kmmap/module-under-test.ko", Test: GuestTestPath}
	var recs []cpio.Record
	for i, p := range spec.Modules {
		b, err := kernels.ReadModule(p)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("kmmap/modules/%02d-%s", i, kernels.ModuleFileName(p))
		m.Modules = append(m.Modules, "/"+name)
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	recs = append(recs, cpio.StaticFile(strings.TrimPrefix(event.ManifestPath, "/"), string(mb), 0o644))

	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := os.Open(base)
	if err != nil {
		return err
	}
	defer in.Close()
	n, err := io.Copy(out, in)
	if err != nil {
		return err
	}
	// Zero padding between archives is skipped by the kernel's unpacker;
	// each archive must start 4-byte aligned.
	if pad := (512 - n%512) % 512; pad > 0 {
		if _, err := out.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	w := cpio.NewDedupWriter(cpio.Newc.Writer(out))
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	return out.Close()
}
