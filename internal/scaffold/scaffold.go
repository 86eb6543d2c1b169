// Package scaffold writes a new out-of-tree module project that kmmap's
// harness tests: a misc device with Kbuild, its guest tests, the host
// test, a .gitignore, a README and a GitHub workflow that calls kmmap's
// reusable one. It owns the template and nothing else: it neither builds
// nor runs what it writes.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"unicode"
)

//go:embed template
var tmpl embed.FS

// Project is what the scaffold is made for.
type Project struct {
	// Name is the module's name: a lower-case C identifier; the device
	// is /dev/<Name>, the host test Test<Name>.
	Name string
	// Module is the Go module path (default example.com/<Name>).
	Module string
	// Go is the go line of go.mod.
	Go string
	// Version is the version of github.com/kmmap/kmmap required;
	// HarnessDir, when set, replaces it with a checkout of kmmap (then
	// Version is v0.0.0).
	Version, HarnessDir string
}

var nameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// NameFor is the module name a directory suggests: its base name, lower
// case, with '-' and '.' as '_'.
func NameFor(dir string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return unicode.ToLower(r)
	}, filepath.Base(filepath.Clean(dir)))
}

// Write writes the project p into dir, which must be empty or not exist,
// and returns the files written, relative to dir.
func Write(dir string, p Project) ([]string, error) {
	if !nameRe.MatchString(p.Name) {
		return nil, fmt.Errorf("module name %q: want a lower-case C identifier of at most 32 characters (it names the .ko, /dev/<name> and the Go package)", p.Name)
	}
	if p.Module == "" {
		p.Module = "example.com/" + p.Name
	}
	if p.Version == "" {
		p.Version = "v0.0.0"
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty: the scaffold writes into a new or empty directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	data := struct {
		Project
		Upper, Title string
	}{p, strings.ToUpper(p.Name), strings.ToUpper(p.Name[:1]) + p.Name[1:]}
	var written []string
	err := fs.WalkDir(tmpl, "template", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := tmpl.ReadFile(name)
		if err != nil {
			return err
		}
		t, err := template.New(name).Delims("[[", "]]").Option("missingkey=error").Parse(string(b))
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, data); err != nil {
			return err
		}
		rel := Path(strings.TrimPrefix(name, "template/"), p.Name)
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
			return err
		}
		written = append(written, rel)
		return nil
	})
	return written, err
}

// Path is where the template file name goes in a project named name:
// without .tmpl, NAME replaced, gitignore and github as dot files.
func Path(name, module string) string {
	name = strings.ReplaceAll(strings.TrimSuffix(name, ".tmpl"), "NAME", module)
	if first, rest, _ := strings.Cut(name, "/"); first == "gitignore" || first == "github" {
		return path.Join("."+first, rest)
	}
	return name
}
