package kernels

import (
	"errors"
	"os"
	"path/filepath"
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
