package vmtests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/moddir"
)

// TestIoctlMagicFree: kmmap's ioctl numbers are registered to no one in
// the kernel's ioctl-number.rst (the harness checks every module's before
// building it: checkIoctls), and a copy whose code is the tty layer's 'T'
// is refused, naming the line that defines it and the registry's owner.
func TestIoctlMagicFree(t *testing.T) {
	t.Parallel()
	root, _ := loadLock(t)
	h := kmmapHarness(t)
	f := cellFetcher(t)
	if err := h.checkIoctls(t.Context(), f, kmmapModule(root)); err != nil {
		t.Error(err)
	}
	clash := t.TempDir()
	if err := moddir.Copy(clash, filepath.Join(root, "kmod")); err != nil {
		t.Fatal(err)
	}
	hdr := filepath.Join(clash, "include", "uapi", "linux", "kmmap.h")
	b, err := os.ReadFile(hdr)
	if err != nil {
		t.Fatal(err)
	}
	magic := regexp.MustCompile(`(#define KMMAP_IOC_MAGIC\s+)\S+`)
	if !magic.Match(b) {
		t.Fatal("kmmap.h defines no KMMAP_IOC_MAGIC")
	}
	if err := os.WriteFile(hdr, magic.ReplaceAll(b, []byte("${1}'T'")), 0o644); err != nil {
		t.Fatal(err)
	}
	err = h.checkIoctls(t.Context(), f, Module{Dir: clash})
	for _, want := range []string{clash + "/include/uapi/linux/kmmap.h:", "_IOWR(KMMAP_IOC_MAGIC, 0x01", "'T'", "ioctls.h", "AllowIoctlClash"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a copy of kmod with KMMAP_IOC_MAGIC 'T': %v\nwant an error saying %q", err, want)
		}
	}
	if err := h.checkIoctls(t.Context(), f, Module{Dir: clash, AllowIoctlClash: true}); err != nil {
		t.Errorf("with AllowIoctlClash: %v", err)
	}
}
