// Package moddir is an out-of-tree module's directory: which of its files
// are sources (the inputs of its build, not what a by-hand make left
// there), listing them and copying them. The harness builds a copy, a
// mutant is applied to a copy; it builds and applies nothing itself.
package moddir

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IsSource reports whether a file under the module directory is an input
// of its build, not an output a by-hand `make` left there.
func IsSource(rel string) bool {
	base := filepath.Base(rel)
	switch {
	case strings.HasPrefix(base, "."), base == "modules.order", base == "Module.symvers":
		return false
	}
	switch filepath.Ext(base) {
	case ".o", ".ko", ".mod", ".cmd", ".a":
		return false
	}
	return !strings.HasSuffix(base, ".mod.c")
}

// Sources lists the module's source files, relative to src, sorted.
func Sources(src string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err == nil && IsSource(rel) {
			files = append(files, rel)
		}
		return err
	})
	sort.Strings(files)
	return files, err
}

// Copy copies the module's sources in src to the same paths under dst.
func Copy(dst, src string) error {
	files, err := Sources(src)
	if err != nil {
		return err
	}
	return CopyFiles(dst, src, files)
}

// CopyFiles copies the files rels (relative to src) to the same paths
// under dst.
func CopyFiles(dst, src string, rels []string) error {
	for _, rel := range rels {
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return err
		}
		if err := WriteFile(filepath.Join(dst, rel), b); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes b to path, making its directory first.
// WriteFile writes b to path, making its directory first.
func WriteFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
