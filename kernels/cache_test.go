package kernels

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestBuildOnceAndAtomically(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "not", "yet", "there", "thing")
	var mu sync.Mutex
	calls := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := Build(dst, func(tmp string) (string, error) {
				mu.Lock()
				calls++
				mu.Unlock()
				p := filepath.Join(tmp, "out")
				return p, os.WriteFile(p, []byte("made"), 0o644)
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if calls != 1 {
		t.Errorf("made %d times, want once", calls)
	}
	if b, _ := os.ReadFile(dst); string(b) != "made" {
		t.Errorf("dst = %q", b)
	}
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "thing")
	boom := errors.New("boom")
	_, err := Build(dst, func(tmp string) (string, error) {
		os.WriteFile(filepath.Join(tmp, "half"), []byte("x"), 0o644)
		return "", boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "thing.lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestNotYoursExplains: a cache entry another user owns (an older kmmap's
// `sudo make toolchains`) is explained with the command that clears it,
// never left a bare "permission denied".
func TestNotYoursExplains(t *testing.T) {
	other := "/" // root's, for a test run by a normal user
	if os.Geteuid() == 0 {
		other = filepath.Join(t.TempDir(), "toolchains")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	err := NotYours(filepath.Join(other, "trixie-0123.lock"), &fs.PathError{Op: "open", Path: other, Err: fs.ErrPermission})
	for _, want := range []string{"permission denied", "sudo rm -rf " + other, CacheEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NotYours: %v\nwant it to say %q", err, want)
		}
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("NotYours(%v) no longer is fs.ErrPermission", err)
	}
	plain := errors.New("disk full")
	if got := NotYours(other, plain); got != plain {
		t.Errorf("NotYours changed an error that is not about permissions: %v", got)
	}
}
