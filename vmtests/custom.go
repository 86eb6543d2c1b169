package vmtests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/kmmap/kmmap/kernels"
)

// debianInclude is the line of a Debian flavour's headers Makefile that
// includes the -common headers by absolute path.
var debianInclude = regexp.MustCompile(`(?m)^include (/usr/src/[^\s]+)/Makefile\s*$`)

// kbuildDir returns a Kbuild directory that works for the custom kernel
// tree kdir. A tree unpacked from Debian's packages (dpkg -x) elsewhere
// than / names its -common headers and kbuild scripts by absolute paths
// into /usr: then a shadow of the flavour and -common directories is made
// in the cache, their Makefiles and absolute symlinks pointing into the
// unpacked tree, and returned; the user's tree is never changed. Any
// other tree is returned as it is.
func kbuildDir(kdir, cache string) (string, error) {
	mk, err := os.ReadFile(filepath.Join(kdir, "Makefile"))
	if err != nil {
		return "", fmt.Errorf("custom kernel: KMMAP_KDIR=%s has no Makefile: %w", kdir, err)
	}
	m := debianInclude.FindSubmatch(mk)
	if m == nil {
		return kdir, nil
	}
	common := string(m[1])
	root, ok := strings.CutSuffix(kdir, "/usr/src/"+filepath.Base(kdir))
	if !ok || root == "" {
		return kdir, nil // installed at its place: the paths are right
	}
	if _, err := os.Stat(filepath.Join(root, common)); err != nil {
		return "", fmt.Errorf("custom kernel: %s/Makefile includes %s/Makefile, which the unpacked tree %s lacks: unpack the linux-headers-*-common package there too (%w)", kdir, common, root, err)
	}
	h := sha256.Sum256([]byte(kdir + "\n" + string(mk)))
	shadow := filepath.Join(cache, "custom", hex.EncodeToString(h[:8]))
	if err := os.RemoveAll(shadow); err != nil {
		return "", err
	}
	for _, d := range []string{"/usr/src/" + filepath.Base(kdir), common} {
		if err := shadowDir(filepath.Join(root, d), filepath.Join(shadow, d), root, shadow); err != nil {
			return "", fmt.Errorf("custom kernel: a Kbuild tree for %s: %w", kdir, err)
		}
	}
	return filepath.Join(shadow, "usr/src", filepath.Base(kdir)), nil
}

// shadowDir makes dst stand for src: its regular files copied (a Makefile
// with /usr/src/ rewritten to the shadow's, so that Kbuild's srctree is
// the shadow), its directories linked, its absolute symlinks pointing
// into root.
func shadowDir(src, dst, root, shadow string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(from)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				target = filepath.Join(root, target)
			} else {
				target = filepath.Join(src, target)
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
		case e.IsDir():
			if err := os.Symlink(from, to); err != nil {
				return err
			}
		default:
			b, err := os.ReadFile(from)
			if err != nil {
				return err
			}
			if e.Name() == "Makefile" {
				b = []byte(strings.ReplaceAll(string(b), " /usr/src/", " "+shadow+"/usr/src/"))
			}
			if err := os.WriteFile(to, b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// customTools says what a custom tree needs that this host lacks, before
// any build: pahole where the kernel makes BTF for its modules.
func customTools(c kernels.Config) error {
	if c.Enabled("CONFIG_DEBUG_INFO_BTF_MODULES") {
		if _, err := exec.LookPath("pahole"); err != nil {
			return fmt.Errorf("custom kernel: it has CONFIG_DEBUG_INFO_BTF_MODULES, and building modules for it runs pahole, which is not installed (apt-get install dwarves)")
		}
	}
	return nil
}
