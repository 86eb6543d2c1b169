// Package console reads a guest's serial console: it keeps the lines and
// finds the kernel's reports in them (WARN, BUG, Oops, KASAN, KCSAN,
// lockdep, a line naming the module under test, ...), each read whole and
// charged to the guest test that was running when it began, as the
// markers testmain writes to the kernel log say. It owns the classifier
// and the attribution; it knows nothing of QEMU, cells or the harness.
package console

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/kmmap/kmmap/vmtests/testmain"
)

// splatRe matches the first line of a kernel report that must fail a test.
var splatRe = regexp.MustCompile(`(WARNING:|BUG:|Oops|Kernel panic|general protection fault|KFENCE:|KASAN:|UBSAN:|` +
	`possible circular locking|inconsistent lock state|possible recursive locking|soft lockup|hung_task|blocked for more than|` +
	`rcu_sched detected stall|rcu: INFO: .* detected stalls?|detected stall on CPU|Call Trace:|` +
	`Unable to handle kernel|Internal error:|kernel BUG at|page dumped because|list_add corruption|list_del corruption)`)

// kinds classify a report by its lines, most specific first: the first
// kind one of whose patterns matches any line of the report wins.
var kinds = []struct {
	kind string
	re   *regexp.Regexp
}{
	{"KASAN", regexp.MustCompile(`BUG: KASAN: `)},
	{"KCSAN", regexp.MustCompile(`BUG: KCSAN: `)},
	{"KFENCE", regexp.MustCompile(`BUG: KFENCE: `)},
	{"UBSAN", regexp.MustCompile(`UBSAN: `)},
	{"lockdep", regexp.MustCompile(`possible circular locking dependency|inconsistent lock state|possible recursive locking|bad unlock balance|held lock freed|lock held when returning to user space`)},
	{"DEBUG_VM", regexp.MustCompile(`page dumped because|VM_BUG_ON|BUG: Bad page (state|map)|BUG: Bad rss-counter`)},
	{"DEBUG_LIST", regexp.MustCompile(`list_(add|del) corruption`)},
	{"soft lockup", regexp.MustCompile(`soft lockup - CPU#\d+ stuck`)},
	{"hung task", regexp.MustCompile(`INFO: task .* blocked for more than \d+ seconds`)},
	{"RCU stall", regexp.MustCompile(`rcu: INFO: .*detected stalls?|self-detected stall on CPU|detected stall on CPU`)},
	{"general protection fault", regexp.MustCompile(`general protection fault`)},
	{"BUG", regexp.MustCompile(`kernel BUG at `)},
	{"Oops", regexp.MustCompile(`BUG: kernel NULL pointer dereference|BUG: unable to handle page fault|Unable to handle kernel |Internal error: Oops|Oops: `)},
	{"panic", regexp.MustCompile(`Kernel panic - not syncing`)},
	{"WARN", regexp.MustCompile(`WARNING: `)},
	{"BUG", regexp.MustCompile(`BUG: `)},
	{"module warning", regexp.MustCompile(`^\[\s*\d+\.\d+\] (.*\[[\w-]+\]|[\w-]+: )`)},
}

// moduleLine matches a kernel console line that names module: its own
// messages (pr_fmt "kmmap: ") and the kernel's about it ("[kmmap]", as in
// "work func kmmap_pin_work [kmmap] enqueued on deprecated workqueue").
// The guest boots with loglevel=5, so every kernel line on the console is
// at warning level or above: each such line fails the test it appears in,
// unless an allowed line says why it is expected.
func moduleLine(module string) *regexp.Regexp {
	m := regexp.QuoteMeta(module)
	return regexp.MustCompile(`^\[\s*\d+\.\d+\] (.*\[` + m + `\]|` + m + `: )`)
}

// KindOf names the kind of a kernel report (see kinds), "kernel report"
// when none matches.
func KindOf(report string) string {
	for _, k := range kinds {
		if k.re.MatchString(report) {
			return k.kind
		}
	}
	return "kernel report"
}

// allowRe are lines that look alarming but are expected of any module;
// each with why.
var allowRe = []*regexp.Regexp{
	// Debian enables MODULE_SIG without enforcing it: an unsigned module
	// loads with this taint line.
	regexp.MustCompile(`module verification failed: signature and/or required key missing - tainting kernel`),
	// Every out-of-tree module taints the kernel once, at its first load.
	regexp.MustCompile(`[\w-]+: loading out-of-tree module taints kernel\.`),
}

var ansiRe = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// cleanLine strips the serial console's carriage returns and ANSI escapes.
func cleanLine(s string) string {
	s = ansiRe.ReplaceAllString(s, "")
	return strings.TrimRight(strings.ReplaceAll(s, "\r", ""), " ")
}

// isSplat reports whether a console line starts a kernel report.
func (c *Console) isSplat(line string) bool {
	if !splatRe.MatchString(line) && (c.modLine() == nil || !c.modLine().MatchString(line)) {
		return false
	}
	for _, a := range append(allowRe, c.allow...) {
		if a.MatchString(line) {
			return false
		}
	}
	return true
}

// modLine is moduleLine of the module under test, once its name is known
// (the module is built before the guest can load it, so before a line
// can name it).
func (c *Console) modLine() *regexp.Regexp {
	if c.modRe == nil && c.module != nil {
		if name := c.module(); name != "" {
			c.modRe = moduleLine(name)
		}
	}
	return c.modRe
}

// ruleRe is the line of "=" that ends a KASAN or KCSAN report (and starts
// one: that line comes before the BUG: line that opens the report here).
var ruleRe = regexp.MustCompile(`^\[\s*\d+\.\d+\] ={20,}$`)

var markRe = regexp.MustCompile(regexp.QuoteMeta(testmain.Marker) + ` (start|end) (\S+)`)

// maxReport bounds how many lines of one kernel report are kept;
// maxOpen, how many lines a report that ends with a line of its own
// (endedRe) may run before it is taken as cut off.
const (
	maxReport = 80
	maxOpen   = 400
)

// endedRe matches the first line of a report that ends with a line of its
// own: a rule of "=" (KASAN, KCSAN, KFENCE, older UBSAN) or "---[ end
// trace" (WARN, BUG, Oops, newer UBSAN); not lockdep's "WARNING: possible
// ...", which has no end line. Such a report stays open across
// the lines other CPUs print meanwhile - a test's marker among them - so
// that it is read whole and charged to the tests running when it began.
var endedRe = regexp.MustCompile(`BUG: (KASAN|KCSAN|KFENCE): |UBSAN: |WARNING: CPU: \d+ PID: |kernel BUG at |Oops|general protection fault|Unable to handle kernel|BUG: unable to handle|BUG: kernel NULL pointer`)

// Console collects the guest's serial console and attributes kernel
// reports (splats) to the guest test that was running, using the markers
// the guest suite writes to /dev/kmsg.
type Console struct {
	Lines  []string            // every line, without \r and escapes
	stack  []string            // tests whose start marker was seen and not their end
	Splats map[string][]string // full test name ("" outside every test) -> reports
	// order is every report charged to a test, in the order they began,
	// with the tests it is charged to.
	order []charged
	open  *report // the report being read, if any
	// kernelRaces are KCSAN reports of the kernel's own races with its
	// devices (kernelsOwnRace): logged, never failed.
	KernelRaces []string
	// module names the module under test ("" until it is built); modRe
	// matches its lines once known.
	module func() string
	modRe  *regexp.Regexp
	// allow are expected lines beside allowRe.
	allow []*regexp.Regexp
}

// report is one kernel report: its first line and those that follow, up
// to its end-of-trace line, and the tests running when it began (more
// than one when tests ran in parallel: it is charged to each).
type report struct {
	keys  []string
	lines []string
	ended bool // it ends with a line of its own (endedRe)
	read  int  // lines read, kept or not
}

// limit is how many lines r may run before it is closed: a report with
// no end line of its own ends at the next marker or after maxReport lines.
func (r *report) limit() int {
	if r.ended {
		return maxOpen
	}
	return maxReport
}

// charged is a report and the tests it is charged to.
type charged struct {
	keys []string
	text string
}

// During returns the reports charged to test or its subtests, in the
// order they began.
func (c *Console) During(test string) []string {
	var out []string
	for _, r := range c.order {
		if slices.ContainsFunc(r.keys, func(k string) bool { return k == test || strings.HasPrefix(k, test+"/") }) {
			out = append(out, r.text)
		}
	}
	return out
}

func (c *Console) closeReport() {
	if c.open == nil {
		return
	}
	r := strings.Join(c.open.lines, "\n")
	switch keys := c.open.keys; {
	case kernelsOwnRace(r, c.modLine()):
		c.KernelRaces = append(c.KernelRaces, r)
	case len(keys) == 0:
		c.Splats[""] = append(c.Splats[""], r)
	default:
		if len(keys) > 1 {
			r = fmt.Sprintf("(while %s ran in parallel: any of them may have caused it)\n%s", strings.Join(keys, ", "), r)
		}
		for _, k := range keys {
			c.Splats[k] = append(c.Splats[k], r)
		}
		c.order = append(c.order, charged{keys, r})
	}
	c.open = nil
}

// kernelsOwnRace reports whether r is a KCSAN report of a race "at unknown
// origin" - a value changed under a watchpoint with no instrumented access
// to explain it: a device, the hypervisor or userland wrote it - with no
// frame of the module in it. The KCSAN cells print one on every boot
// (virtqueue_get_buf_ctx reading the used index QEMU writes); the module's
// races always have a frame of it ("... [kmmap]"). Such reports are
// logged, not failed.
func kernelsOwnRace(r string, mod *regexp.Regexp) bool {
	if KindOf(r) != "KCSAN" || !strings.Contains(r, "race at unknown origin") {
		return false
	}
	for _, l := range strings.Split(r, "\n") {
		if mod != nil && mod.MatchString(l) {
			return false
		}
	}
	return true
}

// New returns the console of a run whose module under test module
// names, with allow's lines expected.
func New(module func() string, allow []*regexp.Regexp) *Console {
	return &Console{Splats: map[string][]string{}, module: module, allow: allow}
}

func (c *Console) Add(raw string) {
	line := cleanLine(raw)
	c.Lines = append(c.Lines, line)
	if m := markRe.FindStringSubmatch(line); m != nil {
		if c.open != nil && !c.open.ended {
			c.closeReport()
		}
		name := m[2]
		c.stack = slices.DeleteFunc(c.stack, func(s string) bool { return s == name || strings.HasPrefix(s, name+"/") })
		if m[1] == "start" {
			c.stack = append(c.stack, name)
		}
		return
	}
	if c.open == nil && c.isSplat(line) {
		c.open = &report{keys: c.running(), ended: endedRe.MatchString(line)}
	}
	if c.open != nil {
		c.open.read++
		if len(c.open.lines) < maxReport {
			c.open.lines = append(c.open.lines, line)
		}
		end := strings.Contains(line, "---[ end ") || c.open.read > 1 && ruleRe.MatchString(line)
		if end || c.open.read >= c.open.limit() {
			c.closeReport()
		}
	}
}

// running is the innermost test running in each test running: one test
// (or subtest) when tests run one at a time, one per test when they run
// in parallel (testmain.Parallel).
func (c *Console) running() []string {
	var out []string
	for i, name := range c.stack {
		if !slices.ContainsFunc(c.stack[i+1:], func(s string) bool { return strings.HasPrefix(s, name+"/") }) {
			out = append(out, name)
		}
	}
	return out
}

// Contains reports whether any console line contains s.
func (c *Console) Contains(s string) bool {
	for _, l := range c.Lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// From returns the console from the first line containing s on (at most
// 60 lines), "" when no line does.
func (c *Console) From(s string) string {
	for i, l := range c.Lines {
		if strings.Contains(l, s) {
			return strings.Join(c.Lines[i:min(len(c.Lines), i+60)], "\n")
		}
	}
	return ""
}

// Finish closes a report the console ended in the middle of.
func (c *Console) Finish() { c.closeReport() }

// Tail returns the last n console lines.
func (c *Console) Tail(n int) string {
	if len(c.Lines) < n {
		n = len(c.Lines)
	}
	return strings.Join(c.Lines[len(c.Lines)-n:], "\n")
}

// KindsOf lists the kinds of reports, in order, without repeats.
func KindsOf(reports []string) string {
	var out []string
	for _, r := range reports {
		if k := KindOf(r); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return strings.Join(out, ", ")
}

// Slug is kind as the name of a file of real reports of that kind
// (testdata/splats/<slug>--<bug>--<cell>.log, the classifier's fixtures).
func Slug(kind string) string { return slugRe.ReplaceAllString(kind, "_") }

var slugRe = regexp.MustCompile(`\W+`)
