package kernels

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GuestModules returns the .ko files of the kernel's own modules named in
// the lock (GuestModules), with every dependency before the module that
// needs it. Dependencies come from each module's .modinfo "depends=", as
// depmod would compute them (Debian ships no modules.dep in the package).
// A module the kernel has built in is not needed and is skipped.
func (t *Tree) GuestModules() ([]string, error) {
	byName := map[string]string{}
	err := filepath.WalkDir(t.ModulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			byName[modName(filepath.Base(p))] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", t.Kernel.ID, err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(t.ModulesDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(filepath.Base(l))] = true
		}
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
			return fmt.Errorf("kernel %s: module %s (needed by %s) is neither in %s nor built in",
				t.Kernel.ID, name, strings.Join(append(chain, "the guest"), " <- "), t.ModulesDir)
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
	for _, m := range t.Kernel.GuestModules {
		if err := visit(m, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modName normalises a module file or module name: virtio-pci.ko -> virtio_pci.
func modName(s string) string {
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
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
	f, err := elf.Open(path)
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
