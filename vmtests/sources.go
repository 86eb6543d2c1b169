package vmtests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/lifeline"
)

// frameRe is a stack frame of a module in a kernel report:
// "kmmap_release+0x21/0x120 [kmmap]".
var frameRe = regexp.MustCompile(`\b([A-Za-z_][\w.]*)\+0x([0-9a-f]+)/0x[0-9a-f]+ \[([\w-]+)\]`)

// gdbLineRe is gdb's answer to `info line *ADDR` when it knows the line.
var gdbLineRe = regexp.MustCompile(`^Line (\d+) of "([^"]+)"`)

// gdbAnswerRe is any answer of gdb's to `info line`.
var gdbAnswerRe = regexp.MustCompile(`^(Line \d+ of "|No line number information|No symbol |Function ")`)

// withSources returns report followed by where each of its frames in the
// module under test is in the module's own sources: gdb's `info line`
// on the built .ko, as a kernel developer asks it by hand, with the path
// of the build's copy turned into the module's directory. A report with
// no such frame, or that gdb cannot place (no gdb-multiarch, no debug
// info), is returned as it is.
func (c *Cell) withSources(report string) string {
	if c.kmod == nil {
		return report
	}
	ko, err := c.Module()
	name := c.moduleName()
	if err != nil || name == "" {
		return report
	}
	var frames []string
	seen := map[string]bool{}
	for _, m := range frameRe.FindAllStringSubmatch(report, -1) {
		if m[3] != name || seen[m[0]] {
			continue
		}
		seen[m[0]] = true
		frames = append(frames, m[0])
	}
	lines := sourceLines(ko, c.KmodSrc, frames)
	if len(lines) == 0 {
		return report
	}
	return report + "\n" + "the module's frames in its sources (gdb info line):\n" + strings.Join(lines, "\n")
}

// sourceLines asks gdb where each frame (as in a report) is in ko, and
// returns "  frame  file:line" for those it places, files of the build's
// copy named in src.
func sourceLines(ko, src string, frames []string) []string {
	gdb, err := exec.LookPath("gdb-multiarch")
	if err != nil || len(frames) == 0 {
		return nil
	}
	args := []string{"-nx", "-batch"}
	for _, f := range frames {
		m := frameRe.FindStringSubmatch(f)
		off, _ := strconv.ParseUint(m[2], 16, 64)
		if off > 0 {
			off-- // a return address is after its call: the call's line
		}
		args = append(args, "-ex", fmt.Sprintf("info line *(%s+%d)", m[1], off))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := lifeline.Tie(exec.CommandContext(ctx, gdb, append(args, ko)...)).Output()
	if err != nil {
		return nil
	}
	// One line of output per command, in order: "Line N of "F" ..." or
	// "No line number information ..." / "No symbol ...".
	var lines, answers []string
	for _, a := range strings.Split(string(out), "\n") {
		if gdbAnswerRe.MatchString(a) { // not a warning of gdb's
			answers = append(answers, a)
		}
	}
	for i, a := range answers {
		if i >= len(frames) {
			break
		}
		m := gdbLineRe.FindStringSubmatch(a)
		if m == nil {
			continue
		}
		lines = append(lines, fmt.Sprintf("  %s  %s:%s", frames[i], inSources(m[2], src), m[1]))
	}
	return lines
}

// inSources is file (a path in the build's copy of the module, or in the
// kernel's headers) as the same file in src, the module's directory,
// when src has it.
func inSources(file, src string) string {
	parts := strings.Split(filepath.ToSlash(file), "/")
	for i := 1; i < len(parts); i++ {
		p := filepath.Join(append([]string{src}, parts[i:]...)...)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && strings.HasPrefix(parts[i-1], ".build-") {
			return p
		}
	}
	return file
}
