package cache

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
// never left a bare "permission denied"; and the command never names a
// directory that is not inside one of this user's (KMMAP_CACHE under a
// system directory gets advice, not `rm -rf /var`).
func TestNotYoursExplains(t *testing.T) {
	denied := func(p string) error { return &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission} }
	if os.Geteuid() == 0 {
		// Root stands in for the user; 65534 for the other one.
		old := filepath.Join(t.TempDir(), "toolchains")
		if err := os.Mkdir(old, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(old, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		lock := filepath.Join(old, "trixie-0123.lock")
		err := NotYours(lock, denied(lock))
		for _, want := range []string{"permission denied", "sudo rm -rf " + old + "`", Env} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("NotYours: %v\nwant it to say %q", err, want)
			}
		}
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("NotYours(%v) no longer is fs.ErrPermission", err)
		}
	} else {
		// Under a system directory (root's): advice, nothing to remove.
		p := "/var/cache/kmmap-test/x.lock"
		err := NotYours(p, denied(p))
		if strings.Contains(err.Error(), "rm -rf") || !strings.Contains(err.Error(), Env) {
			t.Errorf("NotYours under /var/cache: %v\nwant advice to set %s and nothing to remove", err, Env)
		}
	}
	plain := errors.New("disk full")
	if got := NotYours("/", plain); got != plain {
		t.Errorf("NotYours changed an error that is not about permissions: %v", got)
	}
}
