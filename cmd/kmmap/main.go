// Command kmmap manages the pinned kernels of the kmmap test matrix and
// boots one of them by hand.
//
//	kmmap shell [--dir DIR] CELL  boot CELL with the module loaded, shell on this terminal, DIR
//	                              (default: the working directory) shared read-write
//	                              (KMMAP_GDB=1: halted, with QEMU's gdb stub; CELL "custom":
//	                              the kernel KMMAP_KERNEL and KMMAP_KDIR name)
//	kmmap run CELL [--no-module] [--timeout D] -- COMMAND [ARG...]
//	                              run COMMAND in CELL with the module loaded and the working directory
//	                              shared; exits with its status (100 kernel report, 101 panic,
//	                              102 timeout, 103 never ran); --cells A,B|all: one line per cell
//	kmmap init [-name N] [-module M] DIR
//	                              write a new module project (misc device, guest tests, host test,
//	                              GitHub workflow) into DIR, requiring this kmmap
//	kmmap report [-v] [-markdown] read `go test -json ./vmtests` on stdin, print a line per cell
//	kmmap bench [-runs N] [-parts P] measure make test, the matrix, each cell, the edit loop, zero copy; write BENCHMARKS.md
//	kmmap mutate [-mutants DIR] [-run RE] [-j N] [-o FILE]
//	                              run each mutant of kmod/ (internal/kmmap/mutants) against the guest suite
//	kmmap coverage cells          the cells whose kernels profile the module (gcov)
//	kmmap coverage report [-o DIR] [-markdown]
//	                              merge those cells' last coverage into coverage/kmod.info and coverage/html
//
//	kmmap config                  the table of KMMAP_* variables (README, vmtests' package doc)
//
//	kmmap kernels list            the cells in kernels/kernels.lock
//	kmmap kernels fetch [ID...]   download, verify and unpack into the cache
//	kmmap kernels update          re-pin every cell to the newest ABI its suite serves
//	kmmap kernels verify          re-hash the cached .debs against the lock
//	kmmap kernels prune           remove cached kernels no pin needs, and old builds
//	kmmap kernels toolchains [ID...]  create the build roots the cells need (no root needed)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
	"github.com/kmmap/kmmap/vmtests"
)

func main() {
	log.SetFlags(0)
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: kmmap kernels list|fetch [ID...]|verify|prune|update|toolchains\n       kmmap shell [--dir DIR] CELL\n       kmmap run CELL|--cells A,B|all [flags] -- COMMAND [ARG...]\n       kmmap report [-v] [-markdown] < go-test.json")
	}
	flag.Parse()
	args := flag.Args()
	// Die with whatever started this (go run, a script): its guests and
	// builds die with it in turn. SIGTERM ends it as Ctrl-C does.
	if err := lifeline.Self(); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch {
	case len(args) == 2 && args[0] == "shell", len(args) == 4 && args[0] == "shell" && args[1] == "--dir":
		dir, cell := "", args[len(args)-1]
		if len(args) == 4 {
			dir = args[2]
		}
		if err := shell(ctx, cell, dir); err != nil {
			log.Fatalf("kmmap shell: %v", err)
		}
		return
	case len(args) >= 1 && args[0] == "bench":
		if err := bench(ctx, args[1:]); err != nil {
			log.Fatalf("kmmap bench: %v", err)
		}
		return
	case len(args) >= 1 && args[0] == "mutate":
		if err := mutate(ctx, args[1:], os.Stdout); err != nil {
			log.Fatalf("kmmap mutate: %v", err)
		}
		return
	case len(args) >= 1 && args[0] == "coverage":
		if err := coverageCmd(args[1:], os.Stdout); err != nil {
			log.Fatalf("kmmap coverage: %v", err)
		}
		return
	case len(args) >= 1 && args[0] == "run":
		os.Exit(runCmd(ctx, args[1:], os.Stdout, os.Stderr))
	case len(args) >= 1 && args[0] == "init":
		if err := initModule(ctx, args[1:], os.Stdout); err != nil {
			log.Fatalf("kmmap init: %v", err)
		}
		return
	case len(args) == 1 && args[0] == "config":
		fmt.Print(vmtests.ConfigTable())
		return
	case len(args) >= 1 && args[0] == "report":
		os.Exit(report(args[1:], os.Stdin, os.Stdout))
	}
	if len(args) < 2 || args[0] != "kernels" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(ctx, args[1], args[2:]); err != nil {
		log.Fatalf("kmmap: %v", err)
	}
}

func run(ctx context.Context, verb string, args []string) error {
	h, err := harness()
	if err != nil {
		return err
	}
	lock, path := h.Lock(), h.Config().Lock
	switch verb {
	case "list":
		for _, k := range lock.Kernels {
			fmt.Printf("%-16s %-6s %-20s %s\n", k.ID, k.Arch, k.Suite, k.Release)
		}
		return nil
	case "fetch":
		steps := newStepLog(false)
		defer steps.close()
		f, err := h.Fetcher(steps.logf)
		if err != nil {
			return err
		}
		for _, k := range lock.Kernels {
			if len(args) > 0 && !slices.Contains(args, k.ID) {
				continue
			}
			t, err := h.Tree(ctx, k.ID, f)
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\n", k.ID, t.Dir)
		}
		return nil
	case "verify":
		f, err := h.Fetcher(log.Printf)
		if err != nil {
			return err
		}
		bad, missing, err := f.Verify(lock)
		if err != nil {
			return err
		}
		for _, m := range missing {
			fmt.Printf("not cached: %s\n", m)
		}
		for _, b := range bad {
			fmt.Printf("CORRUPT: %s\n", b)
		}
		if len(bad) > 0 {
			return fmt.Errorf("%d cached package(s) did not match the lock", len(bad))
		}
		fmt.Printf("every cached package matches the lock (%d not cached)\n", len(missing))
		return nil
	case "prune":
		f, err := h.Fetcher(log.Printf)
		if err != nil {
			return err
		}
		removed, err := f.Prune(lock, 7*24*time.Hour)
		for _, r := range removed {
			fmt.Printf("removed %s\n", r)
		}
		return err
	case "toolchains":
		f, err := h.Fetcher(log.Printf)
		if err != nil {
			return err
		}
		mirror, err := f.Mirror()
		if err != nil {
			return err
		}
		cache := h.CacheDir()
		done := map[string]bool{}
		for _, k := range lock.Kernels {
			key := toolchain.BaseSuite(k.Suite) + "/" + k.Compiler + "/" + toolchain.Group(k.Arch)
			if done[key] || !toolchain.NeedsRoot(k) || (len(args) > 0 && !slices.Contains(args, k.ID)) {
				continue
			}
			done[key] = true
			r, err := toolchain.Ensure(ctx, cache, k.Suite, k.Compiler, k.Arch, mirror, log.Printf)
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\n", key, r.Dir)
		}
		return nil
	case "update":
		f, err := h.Fetcher(log.Printf)
		if err != nil {
			return err
		}
		mirror, err := f.Mirror()
		if err != nil {
			return err
		}
		r := &kernels.Resolver{Mirror: mirror, HostArches: arch.Hosts(), Logf: log.Printf}
		changes, err := r.Update(ctx, lock)
		if err != nil {
			return err
		}
		for _, c := range changes {
			fmt.Printf("%s: %s -> %s\n", c.ID, orNone(c.From), c.To)
		}
		if len(changes) == 0 {
			fmt.Println("every pin is the newest its suite serves")
		}
		return lock.Save(path)
	}
	return fmt.Errorf("unknown verb %q: want list, fetch or update", verb)
}

func orNone(s string) string {
	if s == "" {
		return "(unpinned)"
	}
	return s
}
