package kernels

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBuilder "builds" a kernel by copying the source tarball's content to
// dir/src/Image, and counts its builds.
type fakeBuilder struct {
	builds atomic.Int32
	fail   error
}

func (b *fakeBuilder) Toolchain(context.Context, Kernel, BuildEnv) (string, error) {
	return "fake-root/gcc-14", nil
}

func (b *fakeBuilder) Build(_ context.Context, k Kernel, _ BuildEnv, src string, config []byte, dir string) (*Tree, error) {
	b.builds.Add(1)
	time.Sleep(50 * time.Millisecond) // long enough for a concurrent fetch to wait on the lock
	if b.fail != nil {
		os.WriteFile(filepath.Join(dir, "half-built"), nil, 0o644)
		return nil, b.fail
	}
	var body []byte
	err := SourceTarball(src, func(_ string, r io.Reader) error {
		var err error
		body, err = io.ReadAll(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	img := filepath.Join(dir, "src", "Image")
	os.MkdirAll(filepath.Dir(img), 0o755)
	os.WriteFile(img, body, 0o644)
	os.WriteFile(filepath.Join(dir, "src", ".config"), config, 0o644)
	return &Tree{Vmlinuz: img, Config: filepath.Join(dir, "src", ".config"), KDir: filepath.Dir(img)}, nil
}

func builtKernel(t *testing.T) (Kernel, map[string][]byte) {
	src := fakeDeb(t, entry{name: "usr/src/linux-source-6.12.tar.xz", body: "source"})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "base.config"), []byte("CONFIG_KASAN=y\n"), 0o644)
	k := Kernel{ID: "6.12-amd64-debug", Arch: "amd64", Suite: "trixie", Series: "6.12", Flavour: "debug",
		Release: "6.12.1-kmmap-debug", Compiler: "gcc-14", Config: []string{"base.config"},
		Packages: []Package{pin(RoleSource, "linux-source-6.12", src)}, dir: dir}
	return k, map[string][]byte{k.Packages[0].Filename: src}
}

// Two concurrent fetches of a kernel built from source build it once; the
// tree is keyed by its config, and a failed build leaves nothing behind.
func TestFetchBuilt(t *testing.T) {
	k, files := builtKernel(t)
	srv := fakeArchive(t, files)
	cache := t.TempDir()
	b := &fakeBuilder{}
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithSourceBuilder(b))

	var wg sync.WaitGroup
	trees := make([]*Tree, 2)
	errs := make([]error, 2)
	for i := range trees {
		wg.Add(1)
		go func() {
			defer wg.Done()
			trees[i], errs[i] = f.Fetch(context.Background(), k)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := b.builds.Load(); n != 1 {
		t.Errorf("built %d times, want once", n)
	}
	if got, _ := os.ReadFile(trees[0].Vmlinuz); string(got) != "source" || trees[0].Dir != trees[1].Dir || trees[0].Kernel.ID != k.ID {
		t.Errorf("trees %+v %+v: want one tree with the built image", trees[0], trees[1])
	}

	// Another config is another kernel.
	os.WriteFile(k.ConfigFragments()[0], []byte("CONFIG_KASAN=y\nCONFIG_LOCKDEP=y\n"), 0o644)
	t2, err := f.Fetch(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Dir == trees[0].Dir || b.builds.Load() != 2 {
		t.Errorf("a changed config fragment did not rebuild (dir %s, %d builds)", t2.Dir, b.builds.Load())
	}
	// Prune keeps the newest build of a kernel the lock pins.
	removed, err := f.Prune(&Lock{Kernels: []Kernel{k}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range removed {
		if r != trees[0].Dir && r != trees[0].Dir+".lock" {
			t.Errorf("prune removed %s", r)
		}
	}
	if _, err := os.Stat(filepath.Join(t2.Dir, "tree.json")); err != nil || len(removed) == 0 || removed[0] != trees[0].Dir {
		t.Errorf("prune removed %v (%v); want only the older build %s", removed, err, trees[0].Dir)
	}

	// Other make variables are another kernel too.
	km := k
	km.Make = []string{"KCSAN_SANITIZE=n"}
	t3, err := f.Fetch(context.Background(), km)
	if err != nil {
		t.Fatal(err)
	}
	if t3.Dir == t2.Dir || b.builds.Load() != 3 {
		t.Errorf("make variables did not rebuild (dir %s, %d builds)", t3.Dir, b.builds.Load())
	}

	// A failed build: a clear error, and no entry in the cache.
	os.WriteFile(k.ConfigFragments()[0], []byte("CONFIG_KASAN=y\nCONFIG_KCSAN=y\n"), 0o644)
	b.fail = errors.New("make all failed")
	_, err = f.Fetch(context.Background(), k)
	if err == nil || !strings.Contains(err.Error(), "6.12-amd64-debug: make all failed") {
		t.Fatalf("err = %v, want the build's error naming the kernel", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, "kernels", "*", "half-built")); len(m) != 0 {
		t.Errorf("a failed build left %v in the cache", m)
	}
}

// Without a builder, a kernel built from source is a clear error.
func TestFetchBuiltNoBuilder(t *testing.T) {
	k, _ := builtKernel(t)
	f, _ := NewFetcher(WithCacheDir(t.TempDir()), WithMirror("http://127.0.0.1:1"))
	if _, err := f.Fetch(context.Background(), k); err == nil || !strings.Contains(err.Error(), "WithSourceBuilder") {
		t.Fatalf("err = %v", err)
	}
}
