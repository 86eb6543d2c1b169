package main

import (
	"os"
	"path/filepath"
	"runtime"

	"github.com/kmmap/kmmap/internal/kmmap"
	"github.com/kmmap/kmmap/kernels"
	"github.com/kmmap/kmmap/vmtests"
)

// harness is kmmap's harness in the checkout this runs in, configured
// from the environment (vmtests.ConfigFromEnv, the one place it is read),
// then opts.
func harness(opts ...vmtests.Option) (*vmtests.Harness, error) {
	cfg, err := vmtests.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	if cfg.Lock == "" {
		if cfg.Lock, err = kernels.DefaultLockPath(); err != nil {
			// Run from elsewhere (kmmap run in a reproducer's
			// directory): the checkout this program was built from.
			_, file, _, ok := runtime.Caller(0)
			lock := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(file))), "kernels", "kernels.lock")
			if _, statErr := os.Stat(lock); !ok || statErr != nil {
				return nil, err
			}
			cfg.Lock = lock
		}
	}
	root := filepath.Dir(filepath.Dir(cfg.Lock))
	return vmtests.New(vmtests.Module{Dir: filepath.Join(root, kmmap.ModuleDir)}, guest(root), append([]vmtests.Option{vmtests.WithConfig(cfg), vmtests.WithRoot(root)}, opts...)...)
}

// guest is kmmap's guest suite with its C programs, in the kmmap checkout
// at root (package kmmap says what each part is).
func guest(root string) vmtests.Guest {
	return vmtests.Guest{
		Dir: root, Package: kmmap.GuestPackage, Tags: []string{kmmap.GuestTag},
		Files:      func(arch, dir string) (map[string]string, error) { return kmmap.Programs(root, arch, dir) },
		Flags:      func(k vmtests.Kernel) []string { return kmmap.Flags(k.Arch, k.PageSize, k.CPUs, k.Config, k.Seed) },
		KernelArgs: func(k vmtests.Kernel) []string { return kmmap.KernelArgs(k.Arch, k.Config) },
		Sources:    kmmap.Sources(root),
	}
}
