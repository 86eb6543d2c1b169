// Package kernelbuild builds the debug kernels of the matrix from their
// pinned Debian linux-source package: allnoconfig plus the lock's config
// fragments, every fragment option checked to have survived, built with
// the suite's own compiler in its toolchain root, reproducibly (fixed
// build timestamp, user and host).
//
// A Builder is a kernels.SourceBuilder: the fetcher decides when to build
// and keeps the result in its cache.
package kernelbuild

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// Reproducible build identity: uname -v and the kernel's banner are the
// same wherever and whenever a cell is built.
const (
	buildTimestamp = "Thu Jan  1 00:00:00 UTC 2026"
	buildUser      = "kmmap"
	buildHost      = "kmmap"
)

// niceness is the kernel build's scheduling priority: below the guests
// and module builds of the cells that are ready, which run beside it.
const niceness = 10

// Builder builds kernels from source.
type Builder struct {
	jobs int
}

// Option configures a Builder.
type Option func(*Builder)

// WithJobs sets make's -j (default: the number of CPUs).
func WithJobs(n int) Option { return func(b *Builder) { b.jobs = n } }

// New returns a Builder.
func New(opts ...Option) *Builder {
	b := &Builder{jobs: runtime.NumCPU()}
	for _, o := range opts {
		o(b)
	}
	return b
}

func (b *Builder) root(ctx context.Context, k kernels.Kernel, env kernels.BuildEnv) (*toolchain.Root, error) {
	if k.Compiler == "" {
		return nil, fmt.Errorf("the lock names no compiler for %s (\"compiler\", e.g. gcc-14)", k.ID)
	}
	return toolchain.Ensure(ctx, env.Cache, k.Suite, k.Compiler, k.Arch, env.Mirror, env.Logf)
}

// Toolchain implements kernels.SourceBuilder: the toolchain root's name
// (suite and package set) and the compiler.
func (b *Builder) Toolchain(ctx context.Context, k kernels.Kernel, env kernels.BuildEnv) (string, error) {
	r, err := b.root(ctx, k, env)
	if err != nil {
		return "", err
	}
	return filepath.Base(r.Dir) + "/" + k.Compiler, nil
}

// Build implements kernels.SourceBuilder.
func (b *Builder) Build(ctx context.Context, k kernels.Kernel, env kernels.BuildEnv, src string, config []byte, dir string) (*kernels.Tree, error) {
	kb, err := arch.Lookup(k.Arch)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	r, err := b.root(ctx, k, env)
	if err != nil {
		return nil, err
	}
	// One source build at a time on the machine, with all of its CPUs:
	// two at once (each -j<CPUs>) both take twice as long, and hold back
	// every cell that waits for either.
	wait := time.Now()
	lk, err := cache.LockFile(filepath.Join(env.Cache, "kernels", "source-build.lock"))
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if w := time.Since(wait); w > time.Second {
		env.Logf("kernel %s: waited %s for another kernel build to end", k.ID, w.Round(time.Second))
	}
	tree := filepath.Join(dir, "src")
	start := time.Now()
	env.Logf("kernel %s: unpacking %s", k.ID, filepath.Base(src))
	if err := unpack(ctx, src, tree); err != nil {
		return nil, fmt.Errorf("unpacking the kernel source: %w", err)
	}
	fragments := filepath.Join(dir, "fragments.config")
	if err := os.WriteFile(fragments, config, 0o644); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	prefix, _ := kb.Cross(k.Compiler)
	makeArgs := []string{"make", "-C", tree, "-j" + strconv.Itoa(b.jobs), "ARCH=" + kb.Kbuild,
		"CC=" + prefix + k.Compiler, "HOSTCC=" + k.Compiler}
	if prefix != "" {
		makeArgs = append(makeArgs, "CROSS_COMPILE="+prefix)
	}
	makeArgs = append(makeArgs, k.Make...)
	run := func(args ...string) ([]byte, error) {
		// nice: a cell's guest, waiting for nothing, goes first; the
		// build takes the CPU the guests leave.
		cmd := r.Command(ctx, tree, append(append([]string{"nice", "-n", strconv.Itoa(niceness), "env",
			"KBUILD_BUILD_TIMESTAMP=" + buildTimestamp, "KBUILD_BUILD_USER=" + buildUser, "KBUILD_BUILD_HOST=" + buildHost},
			makeArgs...), args...)...)
		// The result is make's standard output alone: a make warning on
		// standard error must not become part of a kernelrelease.
		var all, stdout bytes.Buffer
		stage := &lastLine{}
		cmd.Stderr = io.MultiWriter(&all, log, stage)
		cmd.Stdout = io.MultiWriter(&all, &stdout, log, stage)
		// Where the build is, every 5 s, for a live progress line.
		done := make(chan struct{})
		defer close(done)
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if l := stage.get(); l != "" {
						progress.Update(env.Logf, k.ID, "kernel", fmt.Sprintf("building, %s: %s", time.Since(start).Round(time.Second), l))
					}
				case <-done:
					return
				}
			}
		}()
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("make %s failed: %v\n%s\n(the whole log: %s; KMMAP_KEEP_FAILED=1 keeps the tree)",
				strings.Join(args, " "), err, toolchain.Tail(all.Bytes(), 40), log.Name())
		}
		return stdout.Bytes(), nil
	}
	kv, err := run("-s", "--no-print-directory", "kernelversion")
	if err != nil {
		return nil, err
	}
	local, ok := strings.CutPrefix(k.Release, strings.TrimSpace(string(kv)))
	if !ok || !strings.HasPrefix(local, "-") {
		return nil, fmt.Errorf("the lock's release %q does not extend the source's version %q: re-pin with `go run ./cmd/kmmap kernels update`", k.Release, strings.TrimSpace(string(kv)))
	}
	makeArgs = append(makeArgs, "LOCALVERSION="+local)
	if _, err := run("KCONFIG_ALLCONFIG="+fragments, "allnoconfig"); err != nil {
		return nil, err
	}
	dotconfig, err := os.ReadFile(filepath.Join(tree, ".config"))
	if err != nil {
		return nil, err
	}
	if err := kernels.CheckConfig(config, dotconfig); err != nil {
		return nil, fmt.Errorf("config fragments %s: %w", strings.Join(k.Config, ", "), err)
	}
	env.Logf("kernel %s: building %s with %s%s in the %s root, -j%d (a cold build takes minutes; it is cached)", k.ID, k.Release, prefix, k.Compiler, r.Suite, b.jobs)
	if _, err := run("all"); err != nil {
		return nil, err
	}
	rel, err := run("-s", "kernelrelease")
	if err != nil {
		return nil, err
	}
	if got := strings.TrimSpace(string(rel)); got != k.Release {
		return nil, fmt.Errorf("built kernel release is %q, the lock says %q", got, k.Release)
	}
	env.Logf("kernel %s: built in %s", k.ID, time.Since(start).Round(time.Second))
	return &kernels.Tree{
		Vmlinuz: filepath.Join(tree, kb.Image),
		Config:  filepath.Join(tree, ".config"),
		KDir:    tree,
	}, nil
}

// unpack extracts the source tarball the .deb holds into dir with the
// host's tar (xz-utils decompresses several times faster than Go's xz).
func unpack(ctx context.Context, deb, dir string) error {
	if _, err := exec.LookPath("xz"); err != nil {
		return fmt.Errorf("xz not found (apt-get install xz-utils): it unpacks the kernel source")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return kernels.SourceTarball(deb, func(name string, r io.Reader) error {
		cmd := lifeline.Tie(exec.CommandContext(ctx, "tar", "-x", "--strip-components=1", "-C", dir, "-f", "-"))
		if strings.HasSuffix(name, ".xz") {
			cmd.Args = append(cmd.Args, "-J")
		}
		cmd.Stdin = r
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar: %v\n%s", err, out)
		}
		return nil
	})
}

// lastLine keeps the last complete line written to it: a build's stage.
type lastLine struct {
	mu      sync.Mutex
	partial []byte
	line    string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	if i := bytes.LastIndexByte(l.partial, '\n'); i >= 0 {
		lines := strings.Split(strings.TrimSpace(string(l.partial[:i])), "\n")
		if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
			l.line = strings.Join(strings.Fields(last), " ")
		}
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	}
	return len(p), nil
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}
