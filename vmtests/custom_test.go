package vmtests

import (
	"os"
	"os/exec"
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
		{"bad arch", img, kdir, "mips64el", "include/config/kernel.release", "KMMAP_ARCH"},
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

// A Debian kernel unpacked with dpkg -x elsewhere than / (its flavour
// Makefile includes the -common one by absolute path, its scripts link to
// /usr/lib/linux-kbuild-*) builds through a shadow Kbuild tree in the
// cache, and the unpacked tree is left as it was.
func TestDebianTreeShadow(t *testing.T) {
	root := t.TempDir()
	flavour := filepath.Join(root, "usr/src/linux-headers-9.9.9-fake-amd64")
	common := filepath.Join(root, "usr/src/linux-headers-9.9.9-fake-common")
	kbuild := filepath.Join(root, "usr/lib/linux-kbuild-9.9/scripts")
	for _, d := range []string{flavour, common, kbuild} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	flavourMk := "include /usr/src/linux-headers-9.9.9-fake-common/Makefile\n"
	files := map[string]string{
		filepath.Join(flavour, "Makefile"): flavourMk,
		filepath.Join(flavour, ".config"):  "CONFIG_MODULES=y\n",
		filepath.Join(kbuild, "tool"):      "the kbuild scripts\n",
		// Kbuild's srctree is where the included Makefile really is.
		filepath.Join(common, "Makefile"): "srctree := $(realpath $(dir $(lastword $(MAKEFILE_LIST))))\nmodules:\n\t@echo srctree=$(srctree)\n\t@cat $(srctree)/scripts/tool scripts/tool\n",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{flavour, common} {
		if err := os.Symlink("/usr/lib/linux-kbuild-9.9/scripts", filepath.Join(d, "scripts")); err != nil {
			t.Fatal(err)
		}
	}
	cache := t.TempDir()
	kdir, err := kbuildDir(flavour, cache)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(kdir, cache) {
		t.Fatalf("kbuildDir = %s, want a shadow in the cache %s", kdir, cache)
	}
	out, err := exec.Command("make", "-s", "-C", kdir, "modules").CombinedOutput()
	if err != nil {
		t.Fatalf("make in the shadow tree: %v\n%s", err, out)
	}
	if want := "srctree=" + cache; !strings.Contains(string(out), want) || strings.Count(string(out), "the kbuild scripts") != 2 {
		t.Errorf("make in the shadow tree printed:\n%s\nwant %s... and the kbuild scripts through both trees' links", out, want)
	}
	if b, _ := os.ReadFile(filepath.Join(flavour, "Makefile")); string(b) != flavourMk {
		t.Errorf("the unpacked tree's Makefile was changed: %q", b)
	}
	if same, err := kbuildDir(t.TempDir(), cache); err == nil || same != "" {
		t.Errorf("a directory without a Makefile: %q, %v; want an error", same, err)
	}
}

// A custom kernel that makes BTF for its modules needs pahole: named with
// its package before any build.
func TestCustomToolsNamePahole(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := customTools(kernels.ParseConfig([]byte("CONFIG_DEBUG_INFO_BTF_MODULES=y\n")))
	if err == nil || !strings.Contains(err.Error(), "apt-get install dwarves") {
		t.Errorf("err = %v, want one naming dwarves", err)
	}
	if err := customTools(kernels.ParseConfig([]byte("CONFIG_MODULES=y\n"))); err != nil {
		t.Errorf("a kernel without BTF: %v", err)
	}
}
