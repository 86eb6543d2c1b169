package vmtests

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/kmmap/kmmap/internal/console"
)

// boot runs job on cell's VM to the end: restored from its snapshot when
// there is one, else booted cold and saved at the ready point for the runs
// after it. A snapshot that does not restore (corrupt, cut short, or the
// guest in it does not answer, or stops reading its job) is removed and
// the cell boots cold, with a note saying so. Every entry point boots
// through it; the run says how the guest started (run.mode), the cell is
// not changed.
func boot(ctx context.Context, cell *Cell, job Job) (out run) {
	defer cell.claim.release() // the run is over: another may empty Results
	// The run's timeline says how its guest started as the run does: a
	// run that saved the snapshot ran its job restored, and is Saved.
	defer func() { out.times.Mode = out.mode }()
	w, err := cell.work(job)
	if err != nil {
		return run{con: console.New(cell.moduleName, cell.allow), res: newResults(), err: err, mode: Cold}
	}
	var notes []string
	// cold boots the cell without a snapshot, after the notes so far and
	// why.
	cold := func(why ...string) run {
		r := bootVM(ctx, cell, &plan{mode: Cold}, w)
		r.notes = append(append(notes, why...), r.notes...)
		r.mode = Cold
		return r
	}
	// A shell boots cold: the terminal is the guest's from QEMU's start,
	// and a boot that saves a snapshot, or a restore that fails, would
	// hand it to a second VM.
	if cell.snap.cold != "" || cell.snap.store == nil || w.shell != nil {
		return cold()
	}
	s := cell.snap.store
	key, err := s.Key(cell.machine())
	if err != nil {
		return cold(fmt.Sprintf("booted cold: naming the snapshot failed: %v", err))
	}
	restore := func() (run, bool) {
		p := &plan{mode: Restored, key: key}
		if !s.Has(key) {
			return run{}, false
		}
		r := bootVM(ctx, cell, p, w)
		if r.jobSeen && r.jobUnread == nil || ctx.Err() != nil {
			r.mode = Restored
			return r, true
		}
		s.Remove(key)
		notes = append(notes, fmt.Sprintf("the snapshot %s did not restore (removed; booting cold and saving a new one): %s", s.State(key), restoreFailure(r)))
		return r, false
	}
	if r, ok := restore(); ok {
		r.notes = append(notes, r.notes...)
		return r
	}
	lock, err := s.Lock(ctx, key)
	if err != nil {
		return cold(fmt.Sprintf("booted cold: %v", err))
	}
	// Another run may have saved it while this one waited for the lock.
	if r, ok := restore(); ok {
		lock.Unlock()
		r.notes = append(notes, r.notes...)
		return r
	}
	// Boot, save at the ready point (the guest stops there), then run
	// the job in a guest restored from what was saved, as every later
	// run will.
	unlock := sync.OnceFunc(func() { lock.Unlock() })
	saving := bootVM(ctx, cell, &plan{mode: Saved, key: key, unlock: unlock}, w)
	unlock()
	notes = append(notes, saving.notes...)
	if saving.saved {
		if r, ok := restore(); ok {
			r.mode = Saved
			r.times.Save = saving.times.Save
			r.notes = append(notes, r.notes...)
			return r
		}
		return cold()
	}
	// Saving failed, or the run ended before: the guest went on cold.
	saving.mode = Cold
	saving.notes = notes
	return saving
}

// restoreFailure says why a restore gave no guest that took its job.
func restoreFailure(r run) string {
	var why []string
	if r.jobUnread != nil {
		why = append(why, r.jobUnread.Error())
	}
	if r.err != nil {
		why = append(why, "QEMU: "+r.err.Error())
	}
	why = append(why, r.notes...)
	if t := strings.TrimSpace(r.con.Tail(5)); t != "" {
		why = append(why, "last output: "+t)
	}
	if len(why) == 0 {
		return "the guest never took its job"
	}
	return strings.Join(why, "; ")
}

// bootedHow says how run r's guest started, for a person.
func (c *Cell) bootedHow(r run) string {
	switch {
	case r.mode == Restored:
		return "restored from its snapshot"
	case r.mode == Saved:
		return "booted cold and saved its snapshot"
	case c.snap.cold != "":
		return "booted cold: " + c.snap.cold
	}
	return "booted cold"
}
