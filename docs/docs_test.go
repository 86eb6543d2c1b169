// Package docs holds kmmap's documentation beyond the README's quick
// start; its test keeps the links between them working.
package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// linkRe finds Markdown links and their targets (not images, not
// reference-style links, which these files do not use).
var linkRe = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// fenceRe opens or closes a code block, whose text is not Markdown.
var fenceRe = regexp.MustCompile("^\\s*```")

// anchors are the fragment names GitHub gives the headings of a Markdown
// file: lower case, punctuation dropped, spaces as hyphens, a repeated
// one numbered (-1, -2, ...).
func anchors(body string) map[string]bool {
	out := map[string]bool{}
	inCode := false
	for _, l := range strings.Split(body, "\n") {
		if fenceRe.MatchString(l) {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(l, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(l, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
				b.WriteRune(r)
			}
		}
		a := b.String()
		for n := 1; out[a]; n++ {
			a = fmt.Sprintf("%s-%d", b.String(), n)
		}
		out[a] = true
	}
	return out
}

// links are the link targets of a Markdown file, outside code.
func links(body string) []string {
	var out []string
	inCode := false
	for _, l := range strings.Split(body, "\n") {
		if fenceRe.MatchString(l) {
			inCode = !inCode
		}
		if inCode || strings.HasPrefix(l, "    ") {
			continue
		}
		for _, m := range linkRe.FindAllStringSubmatch(l, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// TestLinks: every relative link of README.md and docs/*.md reaches a
// file of the repository, and every #fragment a heading of its file.
func TestLinks(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	if len(files) < 2 {
		t.Fatalf("no Markdown in docs/: %v", files)
	}
	checked := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range links(string(body)) {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
			}
			fi, err := os.Stat(dest)
			if err != nil {
				t.Errorf("%s links to %s: %v", f, target, err)
				continue
			}
			if frag == "" {
				continue
			}
			if fi.IsDir() || !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s links to %s: a fragment of something not Markdown", f, target)
				continue
			}
			b, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !anchors(string(b))[frag] {
				t.Errorf("%s links to %s: %s has no heading #%s", f, target, dest, frag)
			}
		}
	}
	if checked == 0 {
		t.Error("no relative link found: the link pattern no longer matches")
	}
}

// codeLinkRe finds a link from a Go name to the Go file that declares it:
// [`Name`](path.go) or [`Type.Method`](path.go).
var codeLinkRe = regexp.MustCompile("\\[`([A-Za-z_][A-Za-z0-9_.]*)`\\]\\(([^)#\\s]+\\.go)\\)")

// TestCodeLinks: a Go name linked to a file is declared there (a func,
// a method or a type), so a walk through the code in docs/ stays true
// when the code moves.
func TestCodeLinks(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range codeLinkRe.FindAllStringSubmatch(string(body), -1) {
			name := m[1][strings.LastIndex(m[1], ".")+1:]
			src, err := os.ReadFile(filepath.Join(filepath.Dir(f), m[2]))
			if err != nil {
				t.Errorf("%s links %s to %s: %v", f, m[1], m[2], err)
				continue
			}
			decl := regexp.MustCompile(`(?m)^(func (\([^)]*\) )?|type )` + regexp.QuoteMeta(name) + `\b`)
			if !decl.Match(src) {
				t.Errorf("%s links %s to %s, which does not declare %s", f, m[1], m[2], name)
			}
			checked++
		}
	}
	if checked < 10 {
		t.Errorf("only %d links from a Go name to its file: the pattern no longer matches the walk in how-it-works.md", checked)
	}
}

func TestAnchors(t *testing.T) {
	got := anchors("# kmmap\n## When a test fails\n```\n# not a heading\n```\n### 9. SMP and the KCSAN cells\n## Snapshots: boot once, test many\n## When a test fails\n")
	for _, want := range []string{"kmmap", "when-a-test-fails", "9-smp-and-the-kcsan-cells", "snapshots-boot-once-test-many", "when-a-test-fails-1"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a line of a code block was taken for a heading")
	}
}
