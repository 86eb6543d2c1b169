package kernels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// key names a cache entry by the content of everything that goes in it.
func treeKey(pkgs []Package) string {
	sums := make([]string, 0, len(pkgs))
	for _, p := range pkgs {
		sums = append(sums, p.SHA256)
	}
	sort.Strings(sums)
	h := sha256.Sum256([]byte(treeFormat + "\n" + strings.Join(sums, "\n")))
	return hex.EncodeToString(h[:])[:16]
}

// Fetch returns the unpacked tree of k, downloading and verifying what the
// cache lacks. Concurrent callers, in this process or others, share the work.
func (f *Fetcher) Fetch(ctx context.Context, k Kernel) (*Tree, error) {
	if k.FromSource() {
		return f.fetchBuilt(ctx, k)
	}
	pkgs, err := k.packagesFor(f.hostArch)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(f.cache, "kernels", k.ID+"-"+treeKey(pkgs))
	return lockedTree(k, final, func() (*Tree, error) { return f.unpack(ctx, k, pkgs, final) })
}

// unpack downloads k's packages and unpacks them into final.
func (f *Fetcher) unpack(ctx context.Context, k Kernel, pkgs []Package, final string) (*Tree, error) {
	var err error
	debs := make([]string, len(pkgs))
	for i, p := range pkgs {
		if debs[i], err = f.deb(ctx, k, p); err != nil {
			return nil, err
		}
	}

	tmp, err := os.MkdirTemp(filepath.Dir(final), ".tmp-"+k.ID+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	for i, p := range pkgs {
		f.logf("kernel %s: unpacking %s %s", k.ID, p.Name, p.Version)
		if err := extractDeb(debs[i], root); err != nil {
			return nil, fmt.Errorf("kernel %s: unpack %s: %w", k.ID, p.Name, err)
		}
	}
	t, err := layout(k, root, filepath.Join(final, "root"))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	t.Dir = final
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "tree.json"), b, 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	return t, nil
}

// layout finds the pieces of an unpacked kernel in root (a temporary
// directory that will be renamed so that it lives at finalRoot) and fixes the
// absolute paths Debian's headers hold.
func layout(k Kernel, root, finalRoot string) (*Tree, error) {
	rel := k.Release
	t := &Tree{Kernel: k}
	vmlinuz, err := firstExisting(root,
		"boot/vmlinuz-"+rel,
		"boot/vmlinux-"+rel, // ppc64el: an ELF vmlinux
		"usr/lib/modules/"+rel+"/vmlinuz",
		"usr/lib/modules/"+rel+"/vmlinuz.unsigned")
	if err != nil {
		return nil, fmt.Errorf("no kernel image for %s in the image package: %w", rel, err)
	}
	config, err := firstExisting(root, "boot/config-"+rel, "usr/lib/modules/"+rel+"/config", "usr/src/linux-headers-"+rel+"/.config")
	if err != nil {
		return nil, fmt.Errorf("no kernel config for %s: %w", rel, err)
	}
	mods, err := firstExisting(root, "lib/modules/"+rel, "usr/lib/modules/"+rel)
	if err != nil {
		return nil, fmt.Errorf("no modules directory for %s: %w", rel, err)
	}
	kdir, err := firstExisting(root, "usr/src/linux-headers-"+rel)
	if err != nil {
		return nil, fmt.Errorf("no headers for %s: %w", rel, err)
	}
	// The flavour's Makefile includes the -common one by absolute path.
	if err := rewriteFile(filepath.Join(root, kdir, "Makefile"), "/usr/src/", finalRoot+"/usr/src/"); err != nil {
		return nil, err
	}
	t.Vmlinuz = filepath.Join(finalRoot, vmlinuz)
	t.Config = filepath.Join(finalRoot, config)
	t.ModulesDir = filepath.Join(finalRoot, mods)
	t.KDir = filepath.Join(finalRoot, kdir)
	return t, nil
}

func firstExisting(root string, rels ...string) (string, error) {
	for _, r := range rels {
		if _, err := os.Stat(filepath.Join(root, r)); err == nil {
			return r, nil
		}
	}
	return "", fmt.Errorf("none of %s", strings.Join(rels, ", "))
}
