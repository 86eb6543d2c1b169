package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
	"github.com/kmmap/kmmap/vmtests"
)

// bench measures the harness and the module and writes the tables to
// stdout and to the -o file (BENCHMARKS.md). Nothing here passes or fails
// on a figure: a slow machine gives slow numbers, not a red build.
//
// Each part is a block of the file that says when, where and by which
// command it was measured; a run of some parts replaces their blocks and
// keeps the others, so that a part that takes an hour (cold) need not be
// measured again with the rest.
func bench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	runs := fs.Int("runs", 5, "boots per cell (the median is reported)")
	outPath := fs.String("o", "BENCHMARKS.md", "write the report here too")
	only := fs.String("cells", "", "comma-separated cells (default: every cell of the lock)")
	editCell := fs.String("edit-cell", "6.1-amd64", "the cell of the edit-to-verdict loop")
	parts := fs.String("parts", strings.Join(defaultParts, ","), "what to measure, of "+strings.Join(partNames, ", ")+" (distro: the matrix's distribution-cell rows alone; cold: `make test` with every cache empty, about an hour)")
	suite := fs.String("suite", "", "the guest tests each boot of the per-cell table runs (a -test.run pattern; default: the whole suite)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := strings.Split(*parts, ",")
	for _, p := range want {
		if !slices.Contains(partNames, p) && p != "distro" {
			return fmt.Errorf("-parts: no part %q (the parts: %s)", p, strings.Join(partNames, ", "))
		}
	}
	h, err := harness()
	if err != nil {
		return err
	}
	lock, root := h.Lock(), h.Root()
	cells := lock.IDs()
	if *only != "" {
		cells = strings.Split(*only, ",")
	}
	out := *outPath
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	old, err := os.ReadFile(out)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	// The command as run: a run of some parts or cells says so.
	command := "`go run ./cmd/kmmap bench " + strings.Join(args, " ") + "`"
	if len(args) == 0 {
		command = "`make bench` (`go run ./cmd/kmmap bench`)"
	}
	quiet := func(string, ...any) {}
	f, err := h.Fetcher(quiet)
	if err != nil {
		return err
	}
	measure := map[string]func(io.Writer) error{
		"maketest":  func(w io.Writer) error { return benchMakeTest(ctx, w, root, false) },
		"cold":      func(w io.Writer) error { return benchMakeTest(ctx, w, root, true) },
		"matrix":    func(w io.Writer) error { return benchMatrix(w, root, lock, f, !slices.Contains(want, "distro")) },
		"edit":      func(w io.Writer) error { return benchEdit(w, root, *editCell) },
		"initramfs": func(w io.Writer) error { return benchInitramfs(w, root) },
		"cells":     func(w io.Writer) error { return benchCells(ctx, w, h, f, cells, *runs, *suite) },
		"guest": func(w io.Writer) error {
			// Zero copy against copies, in the guest.
			for _, id := range []string{"6.12-amd64", "6.12-arm64"} {
				if slices.Contains(cells, id) {
					if err := guestBench(ctx, w, h, f, id); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	blocks := splitBlocks(string(old))
	for _, name := range partNames {
		if !slices.Contains(want, name) && !(name == "matrix" && slices.Contains(want, "distro")) {
			continue
		}
		stamp := fmt.Sprintf("_%s, %s, SHA-256 of 1 GiB on one core %s (this host's speed drifts: compare figures within a block). %s._",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), secs(hostSpeed()), command)
		var b bytes.Buffer
		if err := measure[name](io.MultiWriter(&b, os.Stdout)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		blocks[name] = stampBlock(b.String(), stamp)
		// Written after every part: an hour's measurement is not lost to a
		// later part's failure.
		if err := os.WriteFile(out, []byte(joinBlocks(blocks)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// The parts of BENCHMARKS.md, in the file's order; make bench measures
// the default ones.
var (
	partNames    = []string{"maketest", "cold", "matrix", "edit", "initramfs", "cells", "guest"}
	defaultParts = []string{"maketest", "matrix", "edit", "initramfs", "cells", "guest"}
)

// benchHeader opens BENCHMARKS.md.
const benchHeader = "# kmmap benchmarks\n\nMade by `make bench` (`go run ./cmd/kmmap bench`), one block per part; `go run ./cmd/kmmap bench -parts <part>` measures one part again and keeps the others. Each block says when, on what machine and by which command it was measured: compare ratios within a block, not absolute numbers across blocks.\n"

// partMark opens a part's block in BENCHMARKS.md.
const partMark = "<!-- kmmap bench part: "

// splitBlocks returns the blocks of a BENCHMARKS.md by name (a file
// written before the blocks had marks has none). A block whose name is no
// part's is kept as it is: figures measured once by hand, with their
// commands, that the harness's choices rest on.
func splitBlocks(md string) map[string]string {
	blocks := map[string]string{}
	chunks := strings.Split(md, partMark)
	for _, c := range chunks[1:] {
		if name, body, ok := strings.Cut(c, " -->\n"); ok {
			blocks[name] = strings.TrimSpace(body) + "\n"
		}
	}
	return blocks
}

// joinBlocks writes BENCHMARKS.md from its blocks, the parts' in their
// order, then the kept ones by name.
func joinBlocks(blocks map[string]string) string {
	var b strings.Builder
	b.WriteString(benchHeader)
	names := slices.Clone(partNames)
	var kept []string
	for name := range blocks {
		if !slices.Contains(partNames, name) {
			kept = append(kept, name)
		}
	}
	slices.Sort(kept)
	for _, name := range append(names, kept...) {
		if body, ok := blocks[name]; ok {
			fmt.Fprintf(&b, "\n%s%s -->\n%s", partMark, name, body)
		}
	}
	return b.String()
}

// stampBlock puts stamp under a block's first heading.
func stampBlock(body, stamp string) string {
	body = strings.TrimSpace(body) + "\n"
	if first, rest, ok := strings.Cut(body, "\n\n"); ok && strings.HasPrefix(first, "## ") {
		return first + "\n\n" + stamp + "\n\n" + rest
	}
	return stamp + "\n\n" + body
}

// benchMakeTest: what CI runs (`bash .ci/run`, so `make test`) in a fresh
// clone of the checkout's HEAD, with this machine's caches (warm) or with
// every cache empty, kmmap's, Go's build and module caches (cold: a fresh
// machine, but for the packages apt installed). It reports the wall time,
// the CPU time of everything the run started and when the first cell's
// verdict came.
func benchMakeTest(ctx context.Context, w io.Writer, root string, cold bool) error {
	tmp, err := os.MkdirTemp("", "kmmap-bench-ci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	clone := filepath.Join(tmp, "kmmap")
	if out, err := exec.CommandContext(ctx, "git", "clone", "-q", root, clone).CombinedOutput(); err != nil {
		return fmt.Errorf("git clone %s: %v\n%s", root, err, out)
	}
	head, err := exec.CommandContext(ctx, "git", "-C", clone, "log", "-1", "--format=%h").Output()
	if err != nil {
		return fmt.Errorf("git log in the clone: %v", err)
	}
	env := os.Environ()
	caches := "warm: this machine's kmmap, Go build and Go module caches"
	if cold {
		for _, v := range []string{"KMMAP_CACHE", "GOCACHE", "GOMODCACHE"} {
			d := filepath.Join(tmp, strings.ToLower(v))
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
			env = append(env, v+"="+d)
		}
		// Go's module cache is read-only: go clean empties it.
		defer func() {
			clean := exec.Command("go", "clean", "-modcache")
			clean.Env = append(os.Environ(), "GOMODCACHE="+filepath.Join(tmp, "gomodcache"))
			clean.Run()
		}()
		caches = "cold: `KMMAP_CACHE`, `GOCACHE` and `GOMODCACHE` empty directories"
	}
	cmd := lifeline.Tie(exec.CommandContext(ctx, "bash", ".ci/run"))
	cmd.Dir, cmd.Env = clone, env
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return err
	}
	pw.Close()
	// Its lines go on to stderr: an hour without a line is no good.
	v := readCIRun(io.TeeReader(pr, os.Stderr), start)
	pr.Close()
	err = cmd.Wait()
	wall := time.Since(start)
	if err != nil {
		return fmt.Errorf("bash .ci/run in a fresh clone (%s) failed after %s: %v; its last lines:\n%s", caches, secs(wall), err, strings.Join(v.tail, "\n"))
	}
	user, sys := cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime()
	title := "`make test` in a fresh clone, warm caches (what CI runs on a machine that kept its cache)"
	if cold {
		title = "`make test` in a fresh clone, every cache empty (what CI runs on a fresh machine)"
	}
	fmt.Fprintf(w, "\n## %s\n\n", title)
	fmt.Fprintln(w, "| commit | caches | wall | CPU (user + sys) | first cell's verdict |\n|---|---|---:|---:|---:|")
	first := "none"
	if v.first > 0 {
		first = fmt.Sprintf("%s (%s)", secs(v.first), v.firstCell)
	}
	fmt.Fprintf(w, "| %s | %s | **%s** (%s) | %s + %s | %s |\n", strings.TrimSpace(string(head)), caches, secs(wall), wall.Round(time.Second), secs(user), secs(sys), first)
	log.Printf("bench: bash .ci/run (%s): %s", caches, secs(wall))
	return nil
}

// cellVerdict matches kmmap report's line for a cell's verdict.
var cellVerdict = regexp.MustCompile(`^(?:PASS|FAIL) +(\S+) +\d+\.\ds  \d+ passed`)

// ciRun is what benchMakeTest reads from a run's output: when the first
// cell's verdict came, and the last lines (to show when it fails).
type ciRun struct {
	first     time.Duration
	firstCell string
	tail      []string
}

func readCIRun(r io.Reader, start time.Time) ciRun {
	var v ciRun
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if m := cellVerdict.FindStringSubmatch(l); m != nil && v.first == 0 {
			v.first, v.firstCell = time.Since(start), m[1]
		}
		if v.tail = append(v.tail, l); len(v.tail) > 60 {
			v.tail = v.tail[1:]
		}
	}
	return v
}

// benchMatrix: the real command over the matrix, warm (the distribution
// cells, the target's ten, booted cold and restored; with all, then every
// cell, then with the module and initramfs caches emptied).
func benchMatrix(w io.Writer, root string, lock *kernels.Lock, f *kernels.Fetcher, all bool) error {
	var distro []string
	for _, k := range lock.Kernels {
		if !k.FromSource() {
			distro = append(distro, k.ID)
		}
	}
	only := "KMMAP_CELLS=" + strings.Join(distro, ",")
	fmt.Fprintf(w, "\n## The whole matrix (`go test -count=1 -run '^TestGuest$' ./vmtests`)\n\n| cells | cache | wall |\n|---|---|---:|\n")
	warmup := []string{only} // warm every cache (and make the snapshots) first
	if all {
		warmup = nil
	}
	if _, err := goTest(root, "^TestGuest$", warmup...); err != nil {
		return err
	}
	warm := func(env ...string) ([]time.Duration, error) {
		var ds []time.Duration
		for range 3 {
			d, err := goTest(root, "^TestGuest$", env...)
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		return ds, nil
	}
	ds, err := warm(only, "KMMAP_SNAPSHOT=0")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "| the %d distribution cells (`%s`) | warm, booted cold (`KMMAP_SNAPSHOT=0`; median of 3: %s) | %s |\n", len(distro), only, durs(ds), secs(median(ds)))
	if ds, err = warm(only); err != nil {
		return err
	}
	fmt.Fprintf(w, "| the %d distribution cells | warm, restored from their snapshots (median of 3: %s) | **%s** |\n", len(distro), durs(ds), secs(median(ds)))
	if !all {
		return nil
	}
	if ds, err = warm(); err != nil {
		return err
	}
	fmt.Fprintf(w, "| all %d cells, with the debug cells | warm, restored (median of 3: %s) | **%s** |\n", len(lock.IDs()), durs(ds), secs(median(ds)))
	for _, d := range []string{"kmod", "initramfs"} {
		if err := os.RemoveAll(filepath.Join(f.CacheDir(), d)); err != nil {
			return err
		}
	}
	cold, err := goTest(root, "^TestGuest$")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "| all %d cells | cold modules and initramfs (every `.ko` rebuilt with its kernel's compiler, both u-root images rebuilt; kernels, toolchain roots and Go's build cache kept) | %s |\n", len(lock.IDs()), secs(cold))
	return nil
}

// benchEdit: nothing, one line of kmod/main.c, or one line of a guest
// test changed, one cell to its verdict, booted cold and restored from its
// snapshot.
func benchEdit(w io.Writer, root, cell string) error {
	fmt.Fprintf(w, "\n## Edit → verdict (`go test -run '^TestGuest$/^%s$' ./vmtests`, wall, median of 3)\n\n| change | guest booted cold (`KMMAP_SNAPSHOT=0`) | restored from its snapshot |\n|---|---:|---:|\n", cell)
	for _, e := range edits {
		fmt.Fprintf(w, "| %s |", e.name)
		for _, env := range []string{"KMMAP_SNAPSHOT=0", "KMMAP_SNAPSHOT=1"} {
			var ds []time.Duration
			for i := range 3 {
				d, err := editLoop(root, cell, e, i, env)
				if err != nil {
					return err
				}
				ds = append(ds, d)
			}
			fmt.Fprintf(w, " **%s** (%s) |", secs(median(ds)), durs(ds))
		}
		fmt.Fprintln(w)
	}
	return nil
}

// edit is a change of the edit loop: a line (a comment) added after the
// line after in file, or nothing.
type edit struct{ name, file, after string }

var edits = []edit{
	{"none (the same run again)", "", ""},
	{"one line of `kmod/main.c`", "kmod/main.c", "#include \"compat.h\"\n"},
	{"one line of a guest test (`vmtests/guest/kmmap_test.go`)", "vmtests/guest/kmmap_test.go", "package guest\n"},
}

// benchInitramfs: the guest image built in an empty cache, then found in it.
func benchInitramfs(w io.Writer, root string) error {
	fmt.Fprintf(w, "\n## Initramfs (guest test binary, C demo, u-root image)\n\n| arch | cold | warm |\n|---|---:|---:|\n")
	for _, arch := range []string{"amd64", "arm64"} {
		c, wm, err := initramfsTimes(arch)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", arch, secs(c), secs(wm))
	}
	return nil
}

// benchCells: each cell runs times to its verdict, booted cold and
// restored from its snapshot, split by stage.
func benchCells(ctx context.Context, w io.Writer, h *vmtests.Harness, f *kernels.Fetcher, cells []string, runs int, suite string) error {
	quiet := func(string, ...any) {}
	coldCfg := h.Config()
	coldCfg.Cold = true
	cold, err := harness(vmtests.WithConfig(coldCfg))
	if err != nil {
		return err
	}
	what := "the whole guest suite each time"
	if suite != "" {
		what = "the guest tests `" + suite + "` each time"
	}
	fmt.Fprintf(w, "\n## Per cell: QEMU start → verdict, median of %d runs (%s), booted cold and restored from a snapshot\n\n", runs, what)
	fmt.Fprintf(w, "Cold (`KMMAP_SNAPSHOT=0`): QEMU start: until the kernel's clock began (printk time 0, from the first console line's timestamp; on arm64 the kernel runs ~0.2 s before its clock starts, counted here); kernel boot: until init started the guest agent (the uptime the agent reports); agent: its virtio modules, listing the tests, then loading kmmap.ko and starting the test binary. Restored (the default): restore: QEMU start until the restored guest runs (QEMU loads the saved state); job: until the agent took its job; agent: the host's time and entropy, loading kmmap.ko, starting the test binary. Guest tests: the suite; one test: QEMU's start to its exit when the guest runs only %s (its four backings), as the rerun line of a failure does. The first restored run of a cell saves the snapshot and is not counted.\n\n", oneTest)
	fmt.Fprintln(w, "| cell | cold: QEMU start | kernel boot | agent | guest tests | **total** | one test | restored: restore | job | agent | guest tests | **total** | one test |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	med := func(tl []vmtests.Timeline, f func(vmtests.Timeline) time.Duration) string {
		var ds []time.Duration
		for _, t := range tl {
			ds = append(ds, f(t))
		}
		return secs(median(ds))
	}
	total := func(t vmtests.Timeline) time.Duration { return t.Exited }
	agentCold := func(t vmtests.Timeline) time.Duration { return t.GuestModules() + t.Agent() }
	for _, id := range cells {
		row := "| " + id
		for _, hh := range []*vmtests.Harness{cold, h} {
			tree, err := hh.Tree(ctx, id, f)
			if err != nil {
				return err
			}
			c, err := hh.Prepare(ctx, f, tree, vmtests.CellOptions{Logf: quiet})
			if err != nil {
				return err
			}
			tl, err := measure(ctx, c, vmtests.SuiteJob{Run: suite}, runs)
			if err != nil {
				return err
			}
			// The inner loop on one test: what the rerun line of a failure runs.
			one, err := hh.Prepare(ctx, f, tree, vmtests.CellOptions{Logf: quiet, ResultsID: id + "-one-test"})
			if err != nil {
				return err
			}
			tlOne, err := measure(ctx, one, vmtests.SuiteJob{Run: "^" + oneTest + "$"}, runs)
			if err != nil {
				return err
			}
			if hh == cold {
				row += fmt.Sprintf(" | %s | %s | %s | %s | **%s** | %s", med(tl, vmtests.Timeline.QEMUStart), med(tl, vmtests.Timeline.KernelBoot),
					med(tl, agentCold), med(tl, vmtests.Timeline.Tests), med(tl, total), med(tlOne, total))
				continue
			}
			row += fmt.Sprintf(" | %s | %s | %s | %s | **%s** | %s", med(tl, vmtests.Timeline.QEMUStart), med(tl, vmtests.Timeline.KernelBoot),
				med(tl, vmtests.Timeline.Agent), med(tl, vmtests.Timeline.Tests), med(tl, total), med(tlOne, total))
		}
		fmt.Fprintln(w, row+" |")
	}
	return nil
}

// oneTest is the guest test the inner-loop column runs alone.
const oneTest = "TestSamePages"

// measure runs job j on c runs times, not counting a run that saved a
// snapshot (it booted cold, and saving took its time).
func measure(ctx context.Context, c *vmtests.Cell, j vmtests.SuiteJob, runs int) ([]vmtests.Timeline, error) {
	var tl []vmtests.Timeline
	for len(tl) < runs {
		t, err := vmtests.Measure(ctx, c, j)
		if err != nil {
			return nil, err
		}
		if t.Mode != vmtests.Saved {
			tl = append(tl, t)
		}
	}
	return tl, nil
}

func guestBench(ctx context.Context, w io.Writer, h *vmtests.Harness, f *kernels.Fetcher, id string) error {
	tree, err := h.Tree(ctx, id, f)
	if err != nil {
		return err
	}
	c, err := h.Prepare(ctx, f, tree, vmtests.CellOptions{ResultsID: id + "-bench"})
	if err != nil {
		return err
	}
	res, err := vmtests.GuestBench(ctx, c, vmtests.BenchJob{Pattern: ".", Time: "300ms"})
	if err != nil {
		return err
	}
	by := map[string]vmtests.BenchResult{}
	for _, r := range res {
		by[r.Name] = r
	}
	fmt.Fprintf(w, "\n## In the guest: %s (%s, `go test -bench` in the guest, 300 ms each)\n\n", id, c.Accel)
	fmt.Fprintln(w, "| size | consume: mmap | consume: pread | **ratio** | produce: mmap | produce: pwrite | **ratio** | pinned (kernel worker fills) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
	sizes := []string{"4KiB", "64KiB", "1MiB", "16MiB"}
	mb := func(name string) float64 { return by[name].Metrics["MB/s"] }
	for _, size := range sizes {
		cm, cr := mb("Consume/"+size+"/mmap"), mb("Consume/"+size+"/read")
		pm, pw := mb("Produce/"+size+"/mmap"), mb("Produce/"+size+"/write")
		fmt.Fprintf(w, "| %s | %.0f MB/s | %.0f MB/s | **%.1f×** | %.0f MB/s | %.0f MB/s | **%.1f×** | %.0f MB/s |\n",
			size, cm, cr, ratio(cm, cr), pm, pw, ratio(pm, pw), mb("Pinned/"+size))
	}
	// The physical limit: the same loops over plain anonymous memory, and
	// each backing's mapping as a share of it (goal: within 20 %).
	for _, op := range []string{"Consume", "Produce"} {
		fmt.Fprintf(w, "\n%s against plain memory (the same loop over the process's own anonymous memory): MB/s and the share of plain's.\n\n", op)
		fmt.Fprintln(w, "| size | plain | fault | pfn | insert |\n|---|---:|---:|---:|---:|")
		for _, size := range sizes {
			plain := mb(op + "/" + size + "/plain")
			row := fmt.Sprintf("| %s | %.0f", size, plain)
			for _, b := range []string{"mmap", "mmap-pfn", "mmap-insert"} {
				if v := mb(op + "/" + size + "/" + b); v > 0 {
					row += fmt.Sprintf(" | %.0f (%.0f %%)", v, 100*ratio(v, plain))
				} else {
					row += " | (skipped: no buffer that big)"
				}
			}
			fmt.Fprintln(w, row+" |")
		}
	}
	fmt.Fprintf(w, "\nRing: %.0f records/s one record per ioctl, %.0f records/s in batches of 64.\n",
		by["Ring/batch1"].Metrics["records/s"], by["Ring/batch64"].Metrics["records/s"])
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// goTest runs go test on the vmtests with -run pattern and returns its wall time.
func goTest(root, run string, env ...string) (time.Duration, error) {
	cmd := lifeline.Tie(exec.Command("go", "test", "-count=1", "-timeout", "60m", "-run", run, "./vmtests"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go test -run %s: %v\n%s", run, err, out)
	}
	d := time.Since(start)
	log.Printf("bench: %sgo test -run %s: %s", strings.Join(append(env, ""), " "), run, secs(d))
	return d, nil
}

// editLoop makes edit e (restored after), runs one cell and returns how
// long go test took.
func editLoop(root, cell string, e edit, i int, env ...string) (time.Duration, error) {
	run := "^TestGuest$/^" + strings.ReplaceAll(cell, ".", `\.`) + "$"
	if e.file == "" {
		return goTest(root, run, env...)
	}
	p := filepath.Join(root, e.file)
	orig, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	defer os.WriteFile(p, orig, 0o644)
	comment := fmt.Sprintf("// bench edit %d %d\n", i, time.Now().UnixNano())
	if strings.HasSuffix(e.file, ".c") {
		comment = fmt.Sprintf("/* bench edit %d %d */\n", i, time.Now().UnixNano())
	}
	edited := bytes.Replace(orig, []byte(e.after), []byte(e.after+comment), 1)
	if bytes.Equal(edited, orig) {
		return 0, fmt.Errorf("%s has no line %q to add one after", e.file, strings.TrimSpace(e.after))
	}
	if err := os.WriteFile(p, edited, 0o644); err != nil {
		return 0, err
	}
	return goTest(root, run, env...)
}

// initramfsTimes builds arch's guest image in an empty cache, then again.
func initramfsTimes(arch string) (cold, warm time.Duration, err error) {
	tmp, err := os.MkdirTemp("", "kmmap-bench-cache-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(tmp)
	h, err := harness(vmtests.WithCache(tmp))
	if err != nil {
		return 0, 0, err
	}
	for _, d := range []*time.Duration{&cold, &warm} {
		start := time.Now()
		if _, err := h.BuildGuestImage(arch, func(string, ...any) {}); err != nil {
			return 0, 0, err
		}
		*d = time.Since(start)
	}
	return cold, warm, nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func durs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.1f", d.Seconds()))
	}
	return strings.Join(s, ", ") + " s"
}

// machine describes this host: CPUs, model, memory, and whether KVM works.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf(", %d GiB", (kb+512*1024)>>20)
	}
	return fmt.Sprintf("%d × %s%s, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// hostSpeed times a fixed single-core job, so that runs of the benchmark
// on a host whose speed drifts can be told apart.
func hostSpeed() time.Duration {
	buf := make([]byte, 1<<20)
	h := sha256.New()
	start := time.Now()
	for range 1024 {
		h.Write(buf)
	}
	h.Sum(nil)
	return time.Since(start)
}
