package vmtests

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/kmmap/kmmap/kernels"
)

// Var is one environment variable the harness reads: its name, what it
// does, its default, and whether it changes what a run does (then a rerun
// line carries it, so that a failure seen with it reproduces).
type Var struct {
	Name    string
	Meaning string
	Default string
	Rerun   bool
}

// Vars is every variable the harness reads, all read by ConfigFromEnv and
// nowhere else. The package doc and the README show this table
// (TestConfigTable keeps them in step: go run ./cmd/kmmap config).
var Vars = []Var{
	{"KMMAP_CELLS", "comma-separated cells to run (empty: every cell of the lock but the extra ones; `all`: every cell)", "", false},
	{"KMMAP_LOCK", "the kernel lock file", "kernels/kernels.lock of the test's Go module, else kmmap's", true},
	{"KMMAP_CACHE", "the cache of kernels, toolchain roots, modules and images", "`$XDG_CACHE_HOME/kmmap`", false},
	{"KMMAP_RESULTS", "where each cell's console, command lines and image are kept", "results/ in the test's Go module", true},
	{"KMMAP_DEBIAN_MIRROR", "the Debian archive to download from", "the first Debian source of apt's configuration", false},
	{"KMMAP_VM_TIMEOUT", "how long a guest may run (a Go duration); the guest suite gets -test.timeout a little under it", "5m", true},
	{"KMMAP_STALL", "how long a guest may print nothing and send no event before the harness prints its goroutines, QEMU's state and the last console lines and fails the cell (a Go duration; `0`: never; a command of kmmap run: only when set)", "3m", false},
	{"KMMAP_ACCEL", "`kvm` or `tcg`, skipping the probe boot", "probed: KVM only when a boot under it works", true},
	{"KMMAP_CPUS", "CPUs of every guest (1 to 8)", "each cell's `cpus` in the lock: 2 for the debug and KCSAN cells, 6.12-amd64 and 6.12-arm64, else 1", true},
	{"KMMAP_MEMDEBUG", "`1`: full run-time memory debugging on the distribution cells too", "", true},
	{"KMMAP_RANDOM_SEED", "seed of the guest suite's random tests", "1", true},
	{"KMMAP_SNAPSHOT", "`0`: boot every guest cold instead of restoring the snapshot of its booted guest (the rerun line says which ran)", "`1`: restore, the first run boots and saves it", true},
	{"KMMAP_TRACE", "`1`: print each guest agent event with its time", "", false},
	{"KMMAP_GDB", "`1`: start guests halted with a gdb stub and print how to attach", "", false},
	{"KMMAP_KERNEL", "a custom kernel image to run as cell `custom`", "", true},
	{"KMMAP_KDIR", "the Kbuild tree of the custom kernel", "", true},
	{"KMMAP_ARCH", "the custom kernel's arch, `amd64` or `arm64`", "the host's", true},
	{"KMMAP_KMODS", "the custom kernel's modules directory (lib/modules/<release>)", "", true},
	{"KMMAP_KEEP_FAILED", "`1`: keep a failed kernel build's tree in the cache", "", false},
}

// Config is the harness's configuration, read once from the environment
// by ConfigFromEnv (or filled by a program) and passed down.
type Config struct {
	// Cells selects cells by ID; empty selects all of the lock's but the
	// extra ones (kernels.Kernel.Extra), AllCells every one.
	Cells    []string
	AllCells bool
	// Lock is the kernel lock's path ("" for the default).
	Lock string
	// Cache is the cache directory ("" for the default).
	Cache string
	// Results is the directory each cell's results go under ("" for
	// results/ in the test's Go module).
	Results string
	// Mirror is the Debian archive ("" for apt's).
	Mirror string
	// VMTimeout bounds each guest (0 for 5 minutes).
	VMTimeout time.Duration
	// Stall is how long a guest may make no progress (no console line,
	// no event) before the watchdog fails it: 0 for 3 minutes (off for a
	// command), negative for never.
	Stall time.Duration
	// Accel forces "kvm" or "tcg" ("" probes).
	Accel string
	// CPUs is every guest's CPUs (0 for each cell's default).
	CPUs int
	// MemDebug gives every cell full run-time memory debugging.
	MemDebug bool
	// Seed is the guest suite's random seed ("" for its own default).
	Seed string
	// Cold boots every guest instead of restoring a snapshot of it.
	Cold bool
	// Trace prints each guest agent event.
	Trace bool
	// GDB starts guests halted with a gdb stub.
	GDB bool
	// Custom is a kernel of one's own, run as cell "custom".
	Custom CustomKernel
	// KeepFailed keeps a failed kernel build's tree.
	KeepFailed bool

	// env is what the run was configured with: the rerun line repeats it.
	env map[string]string
}

// CustomKernel is a kernel not in the lock: its image, its Kbuild tree,
// its arch and (when virtio is built as modules) its modules directory.
type CustomKernel struct {
	Image, KDir, Arch, Modules string
}

// set reports whether a custom kernel is given.
func (c CustomKernel) set() bool { return c.Image != "" || c.KDir != "" }

// arch is the custom kernel's arch: KMMAP_ARCH, else the host's.
func (c CustomKernel) arch() string {
	if c.Arch != "" {
		return c.Arch
	}
	return runtime.GOARCH
}

// ConfigFromEnv reads every variable of Vars, and only those, from the
// environment: the one place the harness reads it.
func ConfigFromEnv() (Config, error) {
	env := map[string]string{}
	for _, v := range Vars {
		if s, ok := os.LookupEnv(v.Name); ok && s != "" {
			env[v.Name] = s
		}
	}
	return parseConfig(env)
}

// parseConfig fills a Config from variable values, saying which is wrong
// and what it wants.
func parseConfig(env map[string]string) (Config, error) {
	c := Config{env: env}
	bad := func(name, want string) error {
		return fmt.Errorf("%s=%q: %s", name, env[name], want)
	}
	c.AllCells = strings.TrimSpace(env["KMMAP_CELLS"]) == "all"
	if s := strings.TrimSpace(env["KMMAP_CELLS"]); s != "" && s != "all" {
		for _, id := range strings.Split(s, ",") {
			if id = strings.TrimSpace(id); id != "" {
				c.Cells = append(c.Cells, id)
			}
		}
	}
	for name, p := range map[string]*string{"KMMAP_LOCK": &c.Lock, "KMMAP_CACHE": &c.Cache, "KMMAP_RESULTS": &c.Results,
		"KMMAP_KERNEL": &c.Custom.Image, "KMMAP_KDIR": &c.Custom.KDir, "KMMAP_KMODS": &c.Custom.Modules} {
		if s := env[name]; s != "" {
			abs, err := filepath.Abs(s)
			if err != nil {
				return Config{}, bad(name, err.Error())
			}
			*p = abs
		}
	}
	c.Mirror = strings.TrimRight(env["KMMAP_DEBIAN_MIRROR"], "/")
	c.Custom.Arch = env["KMMAP_ARCH"]
	if s := env["KMMAP_STALL"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return Config{}, bad("KMMAP_STALL", "want a Go duration such as 5m, or 0 for no watchdog")
		}
		c.Stall = d
		if d == 0 {
			c.Stall = -1
		}
	}
	if s := env["KMMAP_VM_TIMEOUT"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return Config{}, bad("KMMAP_VM_TIMEOUT", "want a Go duration such as 90s")
		}
		c.VMTimeout = d
	}
	switch c.Accel = env["KMMAP_ACCEL"]; c.Accel {
	case "", "kvm", "tcg":
	default:
		return Config{}, bad("KMMAP_ACCEL", "want kvm or tcg")
	}
	if s := env["KMMAP_CPUS"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 8 {
			return Config{}, bad("KMMAP_CPUS", "want a number of CPUs from 1 to 8 (the debug kernels are built with NR_CPUS=8)")
		}
		c.CPUs = n
	}
	c.Seed = env["KMMAP_RANDOM_SEED"]
	c.MemDebug = env["KMMAP_MEMDEBUG"] == "1"
	switch env["KMMAP_SNAPSHOT"] {
	case "", "1":
	case "0":
		c.Cold = true
	default:
		return Config{}, bad("KMMAP_SNAPSHOT", "want 0 (boot cold) or 1 (restore snapshots, the default)")
	}
	c.Trace = env["KMMAP_TRACE"] == "1"
	c.GDB = env["KMMAP_GDB"] == "1"
	c.KeepFailed = env["KMMAP_KEEP_FAILED"] == "1"
	return c, nil
}

// timeout is how long a guest may run: 5 minutes unless set (TCG boots
// take seconds, but a loaded CI host is slow).
func (c Config) timeout() time.Duration {
	if c.VMTimeout > 0 {
		return c.VMTimeout
	}
	return 5 * time.Minute
}

// Selects reports whether the configuration chooses cell k: by name
// (KMMAP_CELLS), or by no choice unless it is an extra cell, or all.
func (c Config) Selects(k kernels.Kernel) bool {
	if k.Extra && len(c.Cells) == 0 {
		return c.AllCells
	}
	return c.selects(k.ID)
}

// selects reports whether cell id is chosen: by name, or by no choice.
func (c Config) selects(id string) bool {
	if len(c.Cells) == 0 {
		return true
	}
	for _, s := range c.Cells {
		if s == id {
			return true
		}
	}
	return false
}

// rerunEnv is the environment a rerun line sets: every variable that
// changes a run and was set for this one, in the table's order, and
// KMMAP_SNAPSHOT saying how the guest started when mode is known (a
// restored guest and a cold boot are different runs).
func (c Config) rerunEnv(mode BootMode) []string {
	var out []string
	for _, v := range Vars {
		s, ok := c.env[v.Name]
		if v.Name == "KMMAP_SNAPSHOT" && mode != "" {
			s, ok = "1", true
			if mode == Cold {
				s = "0"
			}
		}
		if ok && v.Rerun {
			out = append(out, v.Name+"="+shellQuote(s))
		}
	}
	return out
}

// ConfigDoc is the configuration's variables as a Go doc comment's list
// (the package doc holds it: go doc has no tables), wrapped at 76 columns.
func ConfigDoc() string {
	var b strings.Builder
	for _, v := range Vars {
		rerun := "not in the rerun line"
		if v.Rerun {
			rerun = "in the rerun line"
		}
		def := v.shownDefault()
		text := fmt.Sprintf("%s: %s. Default: %s; %s.", v.Name, strings.ReplaceAll(v.Meaning, "`", ""), strings.ReplaceAll(def, "`", ""), rerun)
		line := "  -"
		for _, w := range strings.Fields(text) {
			if len(line)+1+len(w) > 76 && strings.TrimSpace(line) != "-" {
				b.WriteString(line + "\n")
				line = "   "
			}
			line += " " + w
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// ConfigTable renders Vars as the Markdown table of docs/how-it-works.md
// (`kmmap config` prints it).
func ConfigTable() string {
	var b strings.Builder
	b.WriteString("| variable | what it does | default | in the rerun line |\n|---|---|---|---|\n")
	for _, v := range Vars {
		rerun := "no"
		if v.Rerun {
			rerun = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, v.Meaning, v.shownDefault(), rerun)
	}
	return b.String()
}

// shownDefault is v's default as the docs show it.
func (v Var) shownDefault() string {
	if v.Default == "" {
		return "unset"
	}
	return v.Default
}

// BootMode is how a guest came to run its job.
type BootMode string

const (
	// Cold: the kernel booted, no snapshot involved.
	Cold BootMode = "cold"
	// Saved: the kernel booted, QEMU saved the guest at the agent's
	// ready point into the cache, then the run went on.
	Saved BootMode = "saved"
	// Restored: QEMU restored the guest saved at the ready point.
	Restored BootMode = "restored"
)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`!*?[](){}<>|&;#~^") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
