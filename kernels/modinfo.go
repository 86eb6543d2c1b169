package kernels

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// GuestModules returns the .ko files of the kernel's own modules named in
// the lock (GuestModules), with every dependency before the module that
// needs it. Dependencies come from each module's .modinfo "depends=", as
// depmod would compute them (Debian ships no modules.dep in the package).
// A module the kernel has built in is not needed and is skipped. extra
// are more modules to load, after those.
func (t *Tree) GuestModules(extra ...string) ([]string, error) {
	byName := map[string]string{}
	if t.ModulesDir != "" {
		err := filepath.WalkDir(t.ModulesDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if base := filepath.Base(p); !d.IsDir() && isModule(base) {
				byName[modName(base)] = p
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("kernel %s: modules: %w", t.Kernel.ID, err)
		}
	}
	builtin := map[string]bool{}
	for _, dir := range []string{t.ModulesDir, t.KDir} {
		b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
		if dir == "" || err != nil {
			continue
		}
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(filepath.Base(l))] = true
		}
		break
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = modName(name)
		switch {
		case state[name] == 2 || builtin[name]:
			return nil
		case state[name] == 1:
			return fmt.Errorf("kernel %s: module dependency cycle: %s", t.Kernel.ID, strings.Join(append(chain, name), " -> "))
		}
		path, ok := byName[name]
		if !ok {
			where := t.ModulesDir
			if where == "" {
				where = "the modules directory (none given: set KMMAP_KMODS to the kernel's lib/modules/<release>)"
			}
			return fmt.Errorf("kernel %s: module %s (needed by %s) is neither in %s nor built in",
				t.Kernel.ID, name, strings.Join(append(chain, "the guest"), " <- "), where)
		}
		state[name] = 1
		deps, err := modDepends(path)
		if err != nil {
			return fmt.Errorf("kernel %s: %w", t.Kernel.ID, err)
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, path)
		return nil
	}
	for _, m := range append(append([]string(nil), t.Kernel.GuestModules...), extra...) {
		if err := visit(m, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleExts are the endings of module files: plain, or compressed as
// Debian does from 6.12 (.ko.xz).
var moduleExts = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func isModule(name string) bool {
	for _, e := range moduleExts {
		if strings.HasSuffix(name, e) {
			return true
		}
	}
	return false
}

// modName normalises a module file or module name: virtio-pci.ko.xz -> virtio_pci.
func modName(s string) string {
	for _, e := range moduleExts {
		s = strings.TrimSuffix(s, e)
	}
	return strings.ReplaceAll(s, "-", "_")
}

// ModuleFileName is the uncompressed file name of a module file.
func ModuleFileName(path string) string { return modName(filepath.Base(path)) + ".ko" }

// ReadModule returns a module file's ELF bytes, decompressing it by its
// ending (the guest then needs no in-kernel module decompression).
func ReadModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = gr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// modDepends reads the depends= entry of a module's .modinfo section.
func modDepends(path string) ([]string, error) {
	v, err := ModInfo(path, "depends")
	var deps []string
	for _, d := range strings.Split(v, ",") {
		if d != "" {
			deps = append(deps, d)
		}
	}
	return deps, err
}

// ModInfo returns the value of key (e.g. "name", "depends") in a kernel
// module's .modinfo section, or "" if the module has no such key.
func ModInfo(path, key string) (string, error) {
	b, err := ReadModule(path)
	if err != nil {
		return "", err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return "", fmt.Errorf("%s: no .modinfo section: not a kernel module", path)
	}
	data, err := sec.Data()
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			return string(v), nil
		}
	}
	return "", nil
}
