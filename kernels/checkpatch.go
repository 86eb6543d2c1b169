package kernels

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/progress"
)

// checkpatchFiles are what checkpatch.pl reads beside itself, the
// registry of ioctl codes a module's UAPI must not collide with, and the
// Linux-kernel memory model herd7 runs litmus tests against
// (linux-kernel.cfg names the others); each is extracted to the tool's
// directory under its base name.
var checkpatchFiles = []string{"scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch",
	IoctlNumbers, MemoryModel, "tools/memory-model/linux-kernel.def", "tools/memory-model/linux-kernel.bell",
	"tools/memory-model/linux-kernel.cat", "tools/memory-model/lock.cat"}

// MemoryModel is the LKMM's herd7 configuration in the kernel's source.
const MemoryModel = "tools/memory-model/linux-kernel.cfg"

// IoctlNumbers is the kernel's registry of ioctl codes in its source.
const IoctlNumbers = "Documentation/userspace-api/ioctl/ioctl-number.rst"

// checkpatchFormat names what the cached directory holds: a new one is
// extracted when checkpatchFiles change.
const checkpatchFormat = "3"

// Checkpatch returns a directory holding checkpatch.pl and the files it
// reads, taken from the pinned linux-source package (verified like every
// other download) and cached.
func (f *Fetcher) Checkpatch(ctx context.Context, t *Tool) (string, error) {
	if t == nil {
		return "", errors.New(`the lock pins no checkpatch source ("checkpatch" in kernels.lock)`)
	}
	k := Kernel{ID: "checkpatch"}
	// A step of its own, so that its download's progress lines end
	// (a plain log drew "checkpatch: kernel running" to the run's end).
	done := progress.Step(f.logf, k.ID, "kernel")
	deb, err := f.deb(ctx, k, t.Package)
	done(err)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(f.cache, "tools", "checkpatch"+checkpatchFormat+"-"+t.Package.SHA256[:16])
	return cache.Build(dst, func(tmp string) (string, error) {
		f.logf("checkpatch: extracting it from %s %s", t.Package.Name, t.Package.Version)
		out := filepath.Join(tmp, "scripts")
		if err := os.MkdirAll(out, 0o755); err != nil {
			return "", err
		}
		err := withDebData(deb, func(tr *tar.Reader) error { return extractCheckpatch(tr, out) })
		return out, err
	})
}

// extractCheckpatch copies checkpatchFiles out of the source tarball's
// scripts/ directory.
func extractCheckpatch(tr *tar.Reader, out string) error {
	return sourceTarball(tr, func(name string, r io.Reader) error {
		rd, closeR, err := decompress(name, r)
		if err != nil {
			return err
		}
		defer closeR()
		return copyScripts(tar.NewReader(rd), out)
	})
}

// SourceTarball calls fn with the compressed usr/src/linux-source-*.tar.*
// a linux-source .deb holds, and its name.
func SourceTarball(deb string, fn func(name string, r io.Reader) error) error {
	return withDebData(deb, func(tr *tar.Reader) error { return sourceTarball(tr, fn) })
}

func sourceTarball(tr *tar.Reader, fn func(name string, r io.Reader) error) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return errors.New("no usr/src/linux-source-*.tar.* in the package")
		}
		if err != nil {
			return err
		}
		name := path.Base(h.Name)
		clean := strings.TrimPrefix(path.Clean(h.Name), "./")
		if !strings.HasPrefix(clean, "usr/src/") || !strings.HasPrefix(name, "linux-source-") || !strings.Contains(name, ".tar") {
			continue
		}
		return fn(name, tr)
	}
}

func copyScripts(src *tar.Reader, out string) error {
	want := map[string]bool{}
	for _, f := range checkpatchFiles {
		want[f] = true
	}
	for len(want) > 0 {
		h, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		var rel string
		for f := range want {
			if strings.HasSuffix(path.Clean(h.Name), "/"+f) {
				rel = f
			}
		}
		if rel == "" {
			continue
		}
		name := path.Base(rel)
		b, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o755); err != nil {
			return err
		}
		delete(want, rel)
	}
	if len(want) > 0 {
		return fmt.Errorf("the kernel source lacks %v", want)
	}
	return nil
}
