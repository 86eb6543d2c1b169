package vmtests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/kmmap/kmmap/kernels"
)

// crossPrefix returns CROSS_COMPILE for building arch's modules on this
// host and the Debian package that provides that compiler.
func crossPrefix(arch, compiler string) (prefix, pkg string) {
	if arch == runtime.GOARCH {
		return "", compiler
	}
	triplet := map[string]string{"amd64": "x86-64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
	prefix = strings.ReplaceAll(triplet, "x86-64", "x86_64") + "-"
	return prefix, compiler + "-" + triplet
}

var kbuildArch = map[string]string{"amd64": "x86_64", "arm64": "arm64"}

// buildModule builds the module in src for tree's kernel with the compiler
// that kernel was built with, caching the .ko by (kernel, sources).
func buildModule(tree *kernels.Tree, src, cacheDir string) (string, error) {
	k := tree.Kernel
	prefix, pkg := crossPrefix(k.Arch, k.Compiler)
	if k.Compiler != "" {
		if _, err := exec.LookPath(prefix + k.Compiler); err != nil {
			return "", fmt.Errorf("kernel %s was built with %s: %s not found (apt-get install %s)", k.ID, k.Compiler, prefix+k.Compiler, pkg)
		}
	}
	key, err := hashTree(src, tree.Dir, prefix)
	if err != nil {
		return "", err
	}
	out := filepath.Join(cacheDir, "kmod", k.ID+"-"+key)
	ko := filepath.Join(out, "kmmap.ko")
	if _, err := os.Stat(ko); err == nil {
		return ko, nil
	}
	lk, err := kernels.LockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer lk.Unlock()
	if _, err := os.Stat(ko); err == nil {
		return ko, nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".build-"+k.ID+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, os.DirFS(src)); err != nil {
		return "", err
	}
	args := []string{"-C", tree.KDir, "M=" + tmp, "ARCH=" + kbuildArch[k.Arch], "modules"}
	if prefix != "" {
		args = append(args, "CROSS_COMPILE="+prefix)
	}
	cmd := exec.Command("make", args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kernel %s: building the module failed (%s):\n%s", k.ID, strings.Join(cmd.Args, " "), b)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	built, err := os.ReadFile(filepath.Join(tmp, "kmmap.ko"))
	if err != nil {
		return "", fmt.Errorf("kernel %s: make succeeded but made no kmmap.ko: %w", k.ID, err)
	}
	if err := os.WriteFile(ko+".tmp", built, 0o644); err != nil {
		return "", err
	}
	return ko, os.Rename(ko+".tmp", ko)
}

// hashTree hashes the module sources (every regular file under src) with
// the strings that select the kernel and the compiler.
func hashTree(src string, extra ...string) (string, error) {
	h := sha256.New()
	for _, e := range extra {
		fmt.Fprintf(h, "%s\n", e)
	}
	var files []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(src, f)
		fmt.Fprintf(h, "%s\n", rel)
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
