package vmtests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/kernels"
)

func TestCustomTreeErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "bzImage")
	os.WriteFile(img, []byte("x"), 0o644)
	kdir := filepath.Join(dir, "linux")
	os.MkdirAll(filepath.Join(kdir, "include", "config"), 0o755)
	for _, c := range []struct {
		name, kernel, kdir, arch, setup, want string
	}{
		{"neither", "", "", "", "", ""},
		{"only image", img, "", "", "", "set both KMMAP_KERNEL"},
		{"no config", img, kdir, "", "", "no .config"},
		{"no release", img, kdir, "", ".config", "modules_prepare"},
		{"bad arch", img, kdir, "riscv64", "include/config/kernel.release", "KMMAP_ARCH"},
		{"ok", img, kdir, "arm64", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != "" {
				os.WriteFile(filepath.Join(kdir, c.setup), []byte("6.99.0-custom\n"), 0o644)
			}
			cfg, err := parseConfig(map[string]string{"KMMAP_KERNEL": c.kernel, "KMMAP_KDIR": c.kdir, "KMMAP_ARCH": c.arch})
			if err != nil {
				t.Fatal(err)
			}
			var tree *kernels.Tree
			if cfg.Custom.set() {
				tree, err = customTree(cfg.Custom)
			}
			switch {
			case c.kernel == "" && c.kdir == "":
				if cfg.Custom.set() || err != nil {
					t.Errorf("no variables: custom kernel %+v, err %v", cfg.Custom, err)
				}
			case c.want != "":
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("err = %v, want it to mention %q", err, c.want)
				}
			default:
				if err != nil || tree.Kernel.ID != CustomID || tree.Kernel.Release != "6.99.0-custom" || tree.Kernel.Arch != "arm64" {
					t.Errorf("tree %+v, err %v", tree, err)
				}
			}
		})
	}
}
