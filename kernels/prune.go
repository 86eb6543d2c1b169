package kernels

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kmmap/kmmap/internal/cache"
)

// Verify re-hashes every cached .deb that l pins. A file whose hash no
// longer matches is removed, so the next fetch downloads it again, and is
// reported in bad. Pins not in the cache yet are listed in missing.
func (f *Fetcher) Verify(l *Lock) (bad, missing []string, err error) {
	seen := map[string]bool{}
	for _, p := range l.pinned() {
		if seen[p.SHA256] {
			continue
		}
		seen[p.SHA256] = true
		path := filepath.Join(f.cache, "debs", p.SHA256+".deb")
		got, err := cache.HashFile(path)
		switch {
		case os.IsNotExist(err):
			missing = append(missing, fmt.Sprintf("%s %s", p.Name, p.Version))
		case err != nil:
			return bad, missing, err
		case got != p.SHA256:
			if err := os.Remove(path); err != nil {
				return bad, missing, err
			}
			bad = append(bad, fmt.Sprintf("%s %s: SHA-256 %s, pinned %s (removed; the next fetch downloads it again)", p.Name, p.Version, got, p.SHA256))
		}
	}
	return bad, missing, nil
}

// Prune removes what the cache holds for no pin of l: .debs and unpacked
// kernels of other pins, built artefacts (modules, initramfs images,
// snapshots of booted guests) not made or used within maxAge, and temporary files interrupted runs left behind.
// It returns what it removed.
func (f *Fetcher) Prune(l *Lock, maxAge time.Duration) ([]string, error) {
	keepDebs, keepTrees := map[string]bool{}, map[string]bool{}
	for _, p := range l.pinned() {
		keepDebs[p.SHA256+".deb"] = true
	}
	for _, k := range l.Kernels {
		if pkgs, err := k.packagesFor(f.hostArch); err == nil {
			keepTrees[k.ID+"-"+treeKey(pkgs)] = true
		}
	}
	for _, name := range f.newestBuilt(l) {
		keepTrees[name] = true
	}
	var removed []string
	remove := func(p string) error {
		if err := cache.RemoveAll(p); err != nil {
			return err
		}
		removed = append(removed, p)
		return nil
	}
	sweep := func(dir string, stale func(name string, fi os.FileInfo) bool) error {
		ents, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			name := strings.TrimSuffix(e.Name(), ".lock")
			fi, err := e.Info()
			if err != nil {
				return err
			}
			if stale(name, fi) {
				if err := remove(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	old := func(_ string, fi os.FileInfo) bool { return time.Since(fi.ModTime()) > maxAge }
	leftover := func(name string, fi os.FileInfo) bool { return Leftover(name, fi.ModTime()) }
	either := func(a, b func(string, os.FileInfo) bool) func(string, os.FileInfo) bool {
		return func(n string, fi os.FileInfo) bool { return a(n, fi) || b(n, fi) }
	}
	for _, s := range []struct {
		dir   string
		stale func(string, os.FileInfo) bool
	}{
		{"debs", either(leftover, func(n string, _ os.FileInfo) bool { return !strings.HasPrefix(n, ".") && !keepDebs[n] })},
		{"kernels", either(leftover, func(n string, _ os.FileInfo) bool { return !strings.HasPrefix(n, ".") && !keepTrees[n] })},
		{"kmod", old},
		{"initramfs", old},
		{"pvh", old},
		// Snapshots of booted guests (vmtests): a restore touches its
		// state, so an old one is one no run used within maxAge (a
		// kernel, initramfs or QEMU since changed names a new one).
		{"snapshots", either(leftover, old)},
		{"toolchains", leftover},
		{"tools", leftover},
	} {
		if err := sweep(filepath.Join(f.cache, s.dir), s.stale); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// writerRe finds the process ID a temporary file's name ends with (a
// snapshot's RAM while its guest boots: .tmp-<key>-<pid>.ram).
var writerRe = regexp.MustCompile(`-([0-9]+)\.ram$`)

// Leftover reports whether a file of the cache named name, last changed
// at mod, is what an interrupted run left behind: a temporary file or
// directory (.tmp-*, .build-*) whose writer is gone - the process its
// name ends with no longer runs - or that nothing changed for an hour.
// Nothing ever reads such a file: it becomes a cache entry only by its
// rename, once whole.
func Leftover(name string, mod time.Time) bool {
	if !strings.HasPrefix(name, ".tmp-") && !strings.HasPrefix(name, ".build-") {
		return false
	}
	if m := writerRe.FindStringSubmatch(name); m != nil {
		if pid, err := strconv.Atoi(m[1]); err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
			return true
		}
	}
	return time.Since(mod) > time.Hour
}

// newestBuilt names, for each kernel of l built from source, its most
// recently built complete cache entry: its key depends on the toolchain,
// which only the builder knows, and a cold build takes many minutes, so
// prune keeps the newest instead of guessing.
func (f *Fetcher) newestBuilt(l *Lock) map[string]string {
	out := map[string]string{}
	for _, k := range l.Kernels {
		if !k.FromSource() {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(f.cache, "kernels", k.ID+"-????????????????", "tree.json"))
		var newest time.Time
		for _, m := range matches {
			fi, err := os.Stat(m)
			if err == nil && fi.ModTime().After(newest) {
				newest, out[k.ID] = fi.ModTime(), filepath.Base(filepath.Dir(m))
			}
		}
	}
	return out
}
