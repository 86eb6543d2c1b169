// Package event is the message the guest agent sends the host over the
// virtio-serial event channel: a test2json record, or a note from the agent
// itself (its Agent field set).
package event

import "time"

// Channel is the virtio-serial port name of the event channel.
const Channel = "kmmap-events"

// Agent notes.
const (
	AgentModules = "modules" // kernel modules the guest needs are loaded: the snapshot point
	// AgentJob: the job arrived; the agent waits for the Fresh line.
	AgentJob = "job"
	// AgentFresh: the clock is set and the random pool reseeded from the
	// Fresh line (or Error says what failed). Clock is the guest's
	// CLOCK_REALTIME after setting it (Unix nanoseconds).
	AgentFresh  = "fresh"
	AgentKmod   = "kmod"   // the module under test is loaded (or Error says why not)
	AgentList   = "list"   // Tests holds every test the suite will run
	AgentError  = "error"  // the agent could not do its job; Error says why
	AgentUnload = "unload" // the module under test was removed (or Error says why not)
	// AgentReload: the module under test, once removed, loaded and was
	// removed again (or Error says why not): an exit that leaves
	// anything behind (a device, a sysfs entry) breaks the next load.
	AgentReload = "reload"
	AgentExit   = "exit"   // the test binary exited; Error holds a non-zero status
	AgentModule = "module" // Sections holds the loaded module's section addresses
	// AgentCoverage: Files holds the gcov counters (.gcda) of every
	// object the kernel profiled, by path under /sys/kernel/debug/gcov,
	// read after the module under test was unloaded (so its exit path
	// counts too). Sent only by kernels with CONFIG_GCOV_KERNEL.
	AgentCoverage = "coverage"
	// AgentStdout and AgentStderr carry a command's output (Job.Run)
	// in Output; AgentRun ends it, with its exit status in Status (-1
	// when it could not start, Error saying why).
	AgentStdout = "stdout"
	AgentStderr = "stderr"
	AgentRun    = "run"
)

// Event is one line on the event channel. The first group of fields is
// test2json's (cmd/test2json); the second is the agent's.
type Event struct {
	Time    *time.Time `json:",omitempty"`
	Action  string     `json:",omitempty"`
	Package string     `json:",omitempty"`
	Test    string     `json:",omitempty"`
	Elapsed float64    `json:",omitempty"`
	Output  string     `json:",omitempty"`

	Agent    string            `json:",omitempty"`
	Tests    []string          `json:",omitempty"`
	Error    string            `json:",omitempty"`
	Sections map[string]string `json:",omitempty"` // /sys/module/<name>/sections: name -> address
	Files    map[string][]byte `json:",omitempty"` // AgentCoverage: path -> contents
	// Uptime, on the AgentModules event, is how long the kernel had been
	// up when the agent started (/proc/uptime): the host splits the boot
	// into the kernel's own and the agent's loading of modules with it.
	Uptime float64 `json:",omitempty"`
	// Status is a command's exit status (AgentRun).
	Status int `json:",omitempty"`
	// Clock: see AgentFresh.
	Clock int64 `json:",omitempty"`
}

// Manifest is what the guest needs to boot to the agent's ready point:
// the same for every run of a cell, so that a snapshot taken there serves
// them all. The host writes it into the initramfs at ManifestPath; what
// one run does is its Job, sent after the snapshot point.
type Manifest struct {
	// Modules are the kernel's own modules to load first, in order.
	Modules []string `json:"modules"`
	// Kmod is where the agent stores the module under test it receives
	// on ModulePort.
	Kmod string `json:"kmod"`
	// Test is the guest test binary.
	Test string `json:"test"`
}

// Job is what one run does: the host sends it as the first line on
// ModulePort, when the guest is running (booted cold, or restored from a
// snapshot taken while the agent waited for it).
type Job struct {
	// KmodParams are the module under test's parameters.
	KmodParams string `json:"kmod_params,omitempty"`
	// TestArgs are added to the guest test binary's flags.
	TestArgs []string `json:"test_args,omitempty"`
	// Shell: after loading the module, run an interactive shell on the
	// console instead of the tests; leaving it powers the guest off.
	Shell bool `json:"shell,omitempty"`
	// Bench: run the suite's benchmarks matching this pattern instead of
	// its tests, for BenchTime each (a -test.benchtime value).
	Bench     string `json:"bench,omitempty"`
	BenchTime string `json:"bench_time,omitempty"`
	// Run: run this command (as root, in RunDir, with RunEnv added to a
	// sane environment) instead of the tests, its output sent as events.
	Run    []string `json:"run,omitempty"`
	RunDir string   `json:"run_dir,omitempty"`
	RunEnv []string `json:"run_env,omitempty"`
	// NoModule: load no module under test (the host sends none).
	NoModule bool `json:"no_module,omitempty"`
	// Shares are host directories to mount over virtio 9p before the
	// module is loaded: the QEMU mount tag and the guest path.
	Shares []Share `json:"shares,omitempty"`
}

// Fresh is the second line on ModulePort, which the host sends when the
// agent has said it took its job (AgentJob), so that the time in it is
// not stale by how long a restored guest took to read the job. The agent
// sets the clock and reseeds the kernel's random pool from it before
// anything else, so that a restored guest is not a copy of the last one.
type Fresh struct {
	// Time is the host's CLOCK_REALTIME when it sent the line (Unix
	// nanoseconds); Entropy is fresh randomness from the host.
	Time    int64  `json:"time"`
	Entropy []byte `json:"entropy"`
}

// Share is a host directory the guest mounts over virtio 9p.
type Share struct {
	Tag  string `json:"tag"`
	Path string `json:"path"`
}

// Marker starts every line the guest writes to the kernel log at a test's
// (or a command's) start and end, followed by "start" or "end" and the
// test's full name: the host's console parser matches it.
const Marker = "kmmap-test:"

// MarkLine is the kernel log record marking what ("start" or "end") of
// test.
func MarkLine(what, test string) string { return Marker + " " + what + " " + test }

// RunMarker is the name under which a command's start and end are marked
// in the kernel log, as a test's are, so that a kernel report during it
// is attributed to it.
const RunMarker = "command"

// ManifestPath is where the agent finds its manifest in the guest.
const ManifestPath = "/kmmap/manifest.json"
