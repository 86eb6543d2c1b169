package vmtests

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
)

// reproducer is the line that reruns exactly test (a guest test's full
// name; "" for the whole cell) on exactly cell c, booted as mode, under
// the host test hostTest of package pkg, and where its results are.
func reproducer(c *Cell, mode BootMode, hostTest, pkg, test string) string {
	parts := []string{"^" + regexp.QuoteMeta(hostTest) + "$", "^" + regexp.QuoteMeta(c.ID) + "$"}
	if test != "" {
		for _, p := range strings.Split(test, "/") {
			parts = append(parts, "^"+regexp.QuoteMeta(p)+"$")
		}
	}
	var env []string
	if c.cfg != nil {
		env = c.cfg.rerunEnv(mode)
		if c.ID == CustomID && len(c.cfg.Cells) > 0 {
			env = append(env, "KMMAP_CELLS="+CustomID)
		}
	}
	cmd := strings.Join(append(env, "go test "+pkg+" -count=1 -v -run "+shellQuote(strings.Join(parts, "/"))), " ")
	return fmt.Sprintf("rerun: %s\nresults: %s (console.log, cmdline, qemu, the module, initramfs.cpio)", cmd, c.Results)
}

// guestRun is the part of go test's -run pattern below TestGuest/<cell>:
// the guest suite runs only the tests it selects, so a rerun of one test
// boots the cell for that test alone.
func guestRun() string {
	f := flag.Lookup("test.run")
	if f == nil {
		return ""
	}
	parts := splitRun(f.Value.String())
	if len(parts) <= 2 {
		return ""
	}
	return strings.Join(parts[2:], "/")
}

// splitRun splits a -run pattern at the slashes that separate levels, as
// the testing package does (not those inside brackets or parentheses).
func splitRun(pat string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(pat); i++ {
		switch pat[i] {
		case '[', '(':
			depth++
		case ']', ')':
			if depth > 0 {
				depth--
			}
		case '\\':
			i++
		case '/':
			if depth == 0 {
				out = append(out, pat[start:i])
				start = i + 1
			}
		}
	}
	if pat == "" {
		return nil
	}
	return append(out, pat[start:])
}
