package vmtests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kmmap/kmmap/kernels"
)

// CustomID names the cell of a kernel given through the environment.
const CustomID = "custom"

// customTree returns the kernel given by KMMAP_KERNEL (the image QEMU
// boots) and KMMAP_KDIR (its Kbuild tree), with KMMAP_ARCH (default: the
// host's) and KMMAP_KMODS (its modules directory, needed only when virtio
// is built as modules). ok is false when neither variable is set.
func customTree() (t *kernels.Tree, ok bool, err error) {
	img, kdir := os.Getenv("KMMAP_KERNEL"), os.Getenv("KMMAP_KDIR")
	if img == "" && kdir == "" {
		return nil, false, nil
	}
	if img == "" || kdir == "" {
		return nil, true, errors.New("custom kernel: set both KMMAP_KERNEL (the image QEMU boots: bzImage or arm64 Image) and KMMAP_KDIR (the Kbuild tree it was built in)")
	}
	for _, p := range []*string{&img, &kdir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, true, err
		}
		*p = abs
	}
	if _, err := os.Stat(img); err != nil {
		return nil, true, fmt.Errorf("custom kernel: KMMAP_KERNEL: %w", err)
	}
	config := filepath.Join(kdir, ".config")
	if _, err := os.Stat(config); err != nil {
		return nil, true, fmt.Errorf("custom kernel: KMMAP_KDIR=%s is not a configured Kbuild tree (no .config): %w", kdir, err)
	}
	rel, err := os.ReadFile(filepath.Join(kdir, "include", "config", "kernel.release"))
	if err != nil {
		return nil, true, fmt.Errorf("custom kernel: KMMAP_KDIR=%s has no include/config/kernel.release: run `make modules_prepare` in it", kdir)
	}
	arch := os.Getenv("KMMAP_ARCH")
	if arch == "" {
		arch = runtime.GOARCH
	}
	if _, ok := machines[arch]; !ok {
		return nil, true, fmt.Errorf("custom kernel: KMMAP_ARCH=%q: want amd64 or arm64", arch)
	}
	return &kernels.Tree{
		Kernel: kernels.Kernel{
			ID: CustomID, Arch: arch, Release: strings.TrimSpace(string(rel)),
			GuestModules: []string{"virtio_pci", "virtio_console"},
		},
		Dir:        kdir,
		Vmlinuz:    img,
		Config:     config,
		KDir:       kdir,
		ModulesDir: os.Getenv("KMMAP_KMODS"),
	}, true, nil
}
