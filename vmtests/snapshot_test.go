package vmtests

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/snapshot"
)

// freshRun is what testdata/fresh printed in one guest, and when the host
// received its clock line.
type freshRun struct {
	mode   BootMode
	notes  []string
	random string
	clock  time.Time
	host   time.Time
}

// stampWriter keeps what the guest wrote and when each write arrived.
type stampWriter struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (w *stampWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		w.lines, w.at = append(w.lines, sc.Text()), append(w.at, now)
	}
	return len(p), nil
}

// Snapshots: concurrent runs on an empty store save one snapshot (one
// boots and saves, the other waits for it and restores); every restored
// guest has the host's time and random numbers of its own; a snapshot
// cut short is removed and the cell boots cold with a note, saving a new
// one.
func TestSnapshots(t *testing.T) {
	h, id, store := emptyStore(t)
	k, err := h.Lock().Kernel(id)
	if err != nil {
		t.Fatal(err)
	}
	// The program runs from a shared directory, built for the guest.
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin, "./vmtests/testdata/fresh")
	build.Dir = h.Root()
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+k.Arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/fresh: %v\n%s", err, out)
	}
	run := func(name string) freshRun {
		c := commandCell(t, h, id, CellOptions{ResultsID: id + "-snapshot-" + name, NoModule: true, Share: bin})
		var out stampWriter
		r := RunCommand(t.Context(), c, CommandJob{Argv: []string{filepath.Join(bin, "fresh")}, Dir: bin, Stdout: &out})
		fr := freshRun{mode: r.Mode, notes: r.Notes}
		if r.ExitCode() != 0 {
			t.Errorf("%s: %s\n%s\n%s", name, r.Verdict(), strings.Join(r.Problems, "\n"), r.Tail)
		}
		for i, l := range out.lines {
			if v, ok := strings.CutPrefix(l, "random "); ok {
				fr.random = v
			}
			if v, ok := strings.CutPrefix(l, "clock "); ok {
				ns, _ := strconv.ParseInt(v, 10, 64)
				fr.clock, fr.host = time.Unix(0, ns), out.at[i]
			}
		}
		t.Logf("%s: %s, random %s, guest clock %s off the host's", name, r.Booted, fr.random, fr.clock.Sub(fr.host))
		return fr
	}

	var first [2]freshRun
	var wg sync.WaitGroup
	for i := range first {
		wg.Go(func() { first[i] = run(fmt.Sprint("concurrent", i)) })
	}
	wg.Wait()
	if m := []BootMode{first[0].mode, first[1].mode}; !(m[0] == Saved && m[1] == Restored || m[0] == Restored && m[1] == Saved) {
		t.Errorf("two runs at once on an empty store: %s and %s, want one saved and one restored", m[0], m[1])
	}
	states, _ := filepath.Glob(filepath.Join(store, "*.state"))
	if len(states) != 1 {
		t.Errorf("store holds %q, want one snapshot", states)
	}
	again := run("again")
	if again.mode != Restored {
		t.Errorf("third run: %s, want restored", again.mode)
	}
	seen := map[string]string{}
	for i, r := range []freshRun{first[0], first[1], again} {
		if r.random == "" || r.clock.IsZero() {
			t.Errorf("run %d printed no random number or clock", i)
			continue
		}
		if prev, ok := seen[r.random]; ok {
			t.Errorf("run %d (%s) drew the same random number as %s: %s (the random pool was not reseeded)", i, r.mode, prev, r.random)
		}
		seen[r.random] = fmt.Sprintf("run %d (%s)", i, r.mode)
		if d := r.clock.Sub(r.host); d > time.Second || d < -time.Second {
			t.Errorf("run %d (%s): the guest's CLOCK_REALTIME is %s off the host's, want under 1s", i, r.mode, d)
		}
	}

	// A snapshot cut short, its state or its RAM: QEMU cannot load it.
	if len(states) == 1 {
		for _, part := range []string{".state", ".ram"} {
			path := strings.TrimSuffix(states[0], ".state") + part
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			cut := run("cut" + part)
			if cut.mode != Saved || !strings.Contains(strings.Join(cut.notes, "\n"), "did not restore") || cut.random == "" {
				t.Errorf("after cutting the snapshot's %s short: %s, notes %q; want booted cold and saved, with a note", part, cut.mode, cut.notes)
			}
			// The state's size differs from save to save: what shows it
			// was saved whole again is that the next run restores it.
			if next := run("after-cut" + part); next.mode != Restored {
				t.Errorf("the run after the one that saved the snapshot again (its %s cut short before): %s, want restored", part, next.mode)
			}
		}
	}
}

// A restored run's console starts with the boot that saved its snapshot:
// a kernel report during that boot fails every restored run, as it
// failed each cold boot.
func TestRestoredConsoleHasTheBoot(t *testing.T) {
	s := snapshot.New(t.TempDir())
	boot := "[    0.5] Linux version 6.1.0\n[    1.0] WARNING: CPU: 0 PID: 1 at drivers/foo.c:1 foo_probe+0x1/0x2\n[    1.0] ---[ end trace 0000000000000000 ]---\n"
	if err := os.WriteFile(s.BootLog("k"), []byte(boot), 0o644); err != nil {
		t.Fatal(err)
	}
	con := kmmapConsole()
	if err := replayBoot(con, s, "k"); err != nil {
		t.Fatal(err)
	}
	con.Add("[   90.0] kmmap-test: start TestA")
	con.Finish()
	if len(con.Lines) != 5 || !strings.Contains(con.Lines[3], "restored it here") {
		t.Errorf("console lines %q, want the boot's three, then where the restore begins", con.Lines)
	}
	if got := con.Splats[""]; len(got) != 1 || !strings.Contains(got[0], "foo_probe") {
		t.Errorf("reports outside tests %q, want the boot's WARNING", got)
	}
	if err := replayBoot(console.New(nil, nil), s, "missing"); err == nil {
		t.Errorf("no boot log: no error")
	}
}

// A run's Timeline says how its guest started as the run does: the run
// that saved the snapshot is Saved (kmmap bench leaves it out of the
// restored figures), the next Restored, a cold cell's Cold.
func TestTimelineMode(t *testing.T) {
	h, id, _ := emptyStore(t)
	for _, cold := range []string{"", "to see a cold run's timeline"} {
		c := commandCell(t, h, id, CellOptions{ResultsID: id + "-timeline", Cold: cold})
		want := []BootMode{Saved, Restored}
		if cold != "" {
			want = []BootMode{Cold}
		}
		for _, w := range want {
			tl, err := Measure(t.Context(), c, SuiteJob{Run: "^TestSamePages$"})
			if err != nil {
				t.Fatal(err)
			}
			if tl.Mode != w {
				t.Errorf("cold %q: a run's timeline says %s, want %s", cold, tl.Mode, w)
			}
		}
	}
}

// emptyStore is kmmap's harness with an empty snapshot store (and the
// store), and the cell to run commands in; the test runs beside others.
func emptyStore(t *testing.T) (*Harness, string, string) {
	t.Helper()
	bootsVMs(t)
	t.Parallel()
	h0 := kmmapHarness(t)
	id := commandCellID(t, h0)
	if h0.Config().Cold {
		t.Skip("KMMAP_SNAPSHOT=0: snapshots are off")
	}
	store := t.TempDir()
	return kmmapHarness(t, WithSnapshotDir(store)), id, store
}
