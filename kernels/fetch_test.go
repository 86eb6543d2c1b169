package kernels

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type entry struct {
	name, body, link string
}

// fakeDeb builds a .deb (ar with a gzip data.tar) holding entries.
func fakeDeb(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var tb bytes.Buffer
	gz := gzip.NewWriter(&tb)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: "./" + e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if e.link != "" {
			h = &tar.Header{Name: "./" + e.name, Linkname: e.link, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	member := func(name string, data []byte) {
		fmt.Fprintf(&deb, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", name, "0", "0", "0", "100644", len(data))
		deb.Write(data)
		if len(data)%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", []byte{0})
	member("data.tar.gz", tb.Bytes())
	return deb.Bytes()
}

const rel = "6.1.0-1-amd64"

// fakeArchive serves a kernel's packages at their pool paths.
func fakeArchive(t *testing.T, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func pin(role, name string, b []byte) Package {
	s := sha256.Sum256(b)
	return Package{Role: role, Name: name, Version: "1", Arch: "amd64",
		Filename: "pool/" + name + ".deb", Size: int64(len(b)), SHA256: hex.EncodeToString(s[:])}
}

func testKernel(t *testing.T) (Kernel, map[string][]byte) {
	image := fakeDeb(t,
		entry{name: "boot/vmlinuz-" + rel, body: "kernel"},
		entry{name: "boot/config-" + rel, body: "CONFIG_X=y\n"},
		entry{name: "lib/modules/" + rel + "/modules.builtin", body: ""},
	)
	headers := fakeDeb(t,
		entry{name: "usr/src/linux-headers-" + rel + "/Makefile", body: "include /usr/src/linux-headers-6.1.0-1-common/Makefile\n"},
		entry{name: "lib/modules/" + rel + "/build", link: "/usr/src/linux-headers-" + rel},
	)
	kbuild := fakeDeb(t, entry{name: "usr/lib/linux-kbuild-6.1/scripts/x", body: "x"})
	k := Kernel{ID: "6.1-amd64", Arch: "amd64", Suite: "bookworm", Series: "6.1", Flavour: "amd64", Release: rel,
		Packages: []Package{pin(RoleImage, "image", image), pin(RoleHeaders, "headers", headers), pin(RoleKbuild, "kbuild", kbuild)}}
	files := map[string][]byte{}
	for i, b := range [][]byte{image, headers, kbuild} {
		files[k.Packages[i].Filename] = b
	}
	return k, files
}

func TestFetchUnpacksAndFixesPaths(t *testing.T) {
	k, files := testKernel(t)
	srv := fakeArchive(t, files)
	f, err := NewFetcher(WithCacheDir(t.TempDir()), WithMirror(srv.URL), WithHostArch("amd64"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := f.Fetch(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(tree.Vmlinuz); err != nil || string(b) != "kernel" {
		t.Errorf("vmlinuz: %q, %v", b, err)
	}
	mk, err := os.ReadFile(filepath.Join(tree.KDir, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "include " + filepath.Join(tree.Dir, "root") + "/usr/src/linux-headers-6.1.0-1-common/Makefile\n"; string(mk) != want {
		t.Errorf("headers Makefile = %q, want %q", mk, want)
	}
	link, err := os.Readlink(filepath.Join(tree.ModulesDir, "build"))
	if err != nil || filepath.IsAbs(link) {
		t.Errorf("absolute symlink not made relative: %q, %v", link, err)
	}
	// A second fetch is served from the cache, even with the mirror gone.
	srv.Close()
	again, err := f.Fetch(context.Background(), k)
	if err != nil || again.Dir != tree.Dir {
		t.Errorf("cached fetch: %v, %v", again, err)
	}
}

func TestFetchSHAMismatchCachesNothing(t *testing.T) {
	k, files := testKernel(t)
	files[k.Packages[1].Filename] = append([]byte{}, files[k.Packages[0].Filename]...) // wrong bytes for headers
	srv := fakeArchive(t, files)
	cache := t.TempDir()
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithHostArch("amd64"))
	_, err := f.Fetch(context.Background(), k)
	if err == nil || !strings.Contains(err.Error(), "SHA-256 mismatch") || !strings.Contains(err.Error(), "headers") {
		t.Fatalf("err = %v, want a SHA-256 mismatch naming the package", err)
	}
	assertNoPartial(t, cache, k.Packages[1].SHA256)
}

func TestFetchTruncatedDownload(t *testing.T) {
	k, files := testKernel(t)
	files[k.Packages[0].Filename] = files[k.Packages[0].Filename][:100]
	srv := fakeArchive(t, files)
	cache := t.TempDir()
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithHostArch("amd64"))
	if _, err := f.Fetch(context.Background(), k); err == nil || !strings.Contains(err.Error(), "SHA-256 mismatch") {
		t.Fatalf("err = %v, want a SHA-256 mismatch", err)
	}
	assertNoPartial(t, cache, k.Packages[0].SHA256)
}

func TestFetchNotServed(t *testing.T) {
	k, files := testKernel(t)
	delete(files, k.Packages[2].Filename)
	srv := fakeArchive(t, files)
	f, _ := NewFetcher(WithCacheDir(t.TempDir()), WithMirror(srv.URL), WithHostArch("amd64"))
	_, err := f.Fetch(context.Background(), k)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "kmmap kernels update") {
		t.Fatalf("err = %v, want ErrNotServed naming the update command", err)
	}
}

func TestFetchNoKbuildForHost(t *testing.T) {
	k, _ := testKernel(t)
	f, _ := NewFetcher(WithCacheDir(t.TempDir()), WithMirror("http://127.0.0.1:1"), WithHostArch("riscv64"))
	if _, err := f.Fetch(context.Background(), k); err == nil || !strings.Contains(err.Error(), "riscv64 build host") {
		t.Fatalf("err = %v", err)
	}
}

// assertNoPartial checks that the cache holds no verified-looking copy of
// sha, no temporary download and no unpacked kernel entry.
func assertNoPartial(t *testing.T, cache, sha string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(cache, "debs", sha+".deb")); err == nil {
		t.Errorf("unverified .deb left in the cache")
	}
	_ = filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasPrefix(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".build-")) {
			t.Errorf("temporary file left behind: %s", p)
		}
		if err == nil && d.Name() == "tree.json" {
			t.Errorf("kernel entry created despite the failure: %s", p)
		}
		return nil
	})
}

func TestMirrorFromAptSources(t *testing.T) {
	for _, c := range []struct{ name, file, body, want string }{
		{"deb822", "sources.list.d/debian.sources",
			"Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
			"http://deb.example/debian"},
		{"one-line", "sources.list",
			"# comment\ndeb [arch=amd64 signed-by=/x.gpg] http://other.example/apt cloud-sdk main\ndeb http://mirror.example/debian/ trixie main\n",
			"http://mirror.example/debian"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(MirrorEnv, "")
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
			os.WriteFile(filepath.Join(dir, c.file), []byte(c.body), 0o644)
			got, err := Mirror(dir)
			if err != nil || got != c.want {
				t.Errorf("Mirror = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		t.Setenv(MirrorEnv, "")
		if _, err := Mirror(t.TempDir()); err == nil || !strings.Contains(err.Error(), MirrorEnv) {
			t.Errorf("err = %v, want one naming %s", err, MirrorEnv)
		}
	})
}

func TestLockInRepoIsValid(t *testing.T) {
	l, err := LoadLock("kernels.lock")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range l.Kernels {
		for _, host := range []string{"amd64", "arm64"} {
			if _, err := k.packagesFor(host); err != nil {
				t.Error(err)
			}
		}
		if k.Release == "" || k.Compiler == "" {
			t.Errorf("kernel %s: release and compiler must be pinned", k.ID)
		}
	}
}

func TestVerifyAndPrune(t *testing.T) {
	k, files := testKernel(t)
	srv := fakeArchive(t, files)
	cache := t.TempDir()
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithHostArch("amd64"))
	tree, err := f.Fetch(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lock{Kernels: []Kernel{k}}
	if bad, missing, err := f.Verify(l); err != nil || len(bad) != 0 || len(missing) != 0 {
		t.Fatalf("clean cache: bad %v, missing %v, %v", bad, missing, err)
	}
	// Corrupt one .deb: verify reports it and removes it.
	deb := filepath.Join(cache, "debs", k.Packages[0].SHA256+".deb")
	if err := os.WriteFile(deb, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad, _, err := f.Verify(l)
	if err != nil || len(bad) != 1 || !strings.Contains(bad[0], "image") {
		t.Fatalf("bad = %v, %v", bad, err)
	}
	if _, err := os.Stat(deb); !os.IsNotExist(err) {
		t.Errorf("corrupt .deb still cached")
	}
	// Prune: a kernel the lock no longer pins goes; the pinned one stays.
	stray := filepath.Join(cache, "kernels", "4.19-amd64-0123456789abcdef")
	os.MkdirAll(stray, 0o755)
	os.WriteFile(filepath.Join(cache, "debs", strings.Repeat("a", 64)+".deb"), nil, 0o644)
	// ... and an interrupted download from two hours ago.
	partial := filepath.Join(cache, "debs", ".tmp-image-123")
	os.WriteFile(partial, []byte("half"), 0o644)
	two := time.Now().Add(-2 * time.Hour)
	os.Chtimes(partial, two, two)
	// Snapshots of booted guests: one not restored for two hours goes,
	// with its lock; one restored just now stays.
	snaps := filepath.Join(cache, "snapshots")
	os.MkdirAll(snaps, 0o755)
	for _, name := range []string{"6.1-amd64-00000000000000aa.state", "6.1-amd64-00000000000000aa.lock", "6.1-amd64-00000000000000bb.state"} {
		os.WriteFile(filepath.Join(snaps, name), []byte("qemu"), 0o644)
	}
	for _, name := range []string{"6.1-amd64-00000000000000aa.state", "6.1-amd64-00000000000000aa.lock"} {
		os.Chtimes(filepath.Join(snaps, name), two, two)
	}
	// A snapshot's RAM a killed run was saving (its process is gone)
	// goes at once; one a running process writes stays.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	killed := filepath.Join(snaps, fmt.Sprintf(".tmp-6.1-amd64-00000000000000cc-%d.ram", dead.Process.Pid))
	saving := filepath.Join(snaps, fmt.Sprintf(".tmp-6.1-amd64-00000000000000dd-%d.ram", os.Getpid()))
	for _, p := range []string{killed, saving} {
		os.WriteFile(p, []byte("ram"), 0o644)
	}
	removed, err := f.Prune(l, time.Hour)
	if err != nil || len(removed) != 6 || !slices.Contains(removed, killed) {
		t.Errorf("removed %v, %v; want the stray tree, the stray .deb, the partial download, the old snapshot with its lock and the killed run's RAM file", removed, err)
	}
	if _, err := os.Stat(saving); err != nil {
		t.Errorf("prune removed the RAM file of a snapshot being saved: %v", err)
	}
	if _, err := os.Stat(filepath.Join(snaps, "6.1-amd64-00000000000000bb.state")); err != nil {
		t.Errorf("prune removed a snapshot in use: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tree.Dir, "tree.json")); err != nil {
		t.Errorf("prune removed the pinned kernel: %v", err)
	}
}

func TestFetchUnreachableMirror(t *testing.T) {
	k, _ := testKernel(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	cache := t.TempDir()
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(url), WithHostArch("amd64"))
	_, err := f.Fetch(context.Background(), k)
	if err == nil || !strings.Contains(err.Error(), "is the mirror reachable") || !strings.Contains(err.Error(), MirrorEnv) {
		t.Fatalf("err = %v, want one saying the mirror is unreachable and naming %s", err, MirrorEnv)
	}
	assertNoPartial(t, cache, k.Packages[0].SHA256)
}

// An interrupted download leaves nothing behind, and the next fetch starts
// it again and succeeds.
func TestFetchInterruptedThenRestarted(t *testing.T) {
	k, files := testKernel(t)
	var mu sync.Mutex
	cut := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		drop := cut
		cut = false
		mu.Unlock()
		if drop { // promise the whole file, send half, hang up
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(b)
	}))
	defer srv.Close()
	cache := t.TempDir()
	f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithHostArch("amd64"))
	_, err := f.Fetch(context.Background(), k)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err = %v, want an interrupted download", err)
	}
	assertNoPartial(t, cache, k.Packages[0].SHA256)
	if _, err := f.Fetch(context.Background(), k); err != nil {
		t.Fatalf("fetch after the interruption: %v", err)
	}
}

// Concurrent fetchers on one cache (each with its own file locks, as two
// processes would have) download every file once and agree on the tree.
func TestConcurrentFetchesDownloadOnce(t *testing.T) {
	k, files := testKernel(t)
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		w.Write(files[strings.TrimPrefix(r.URL.Path, "/")])
	}))
	defer srv.Close()
	cache := t.TempDir()
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, _ := NewFetcher(WithCacheDir(cache), WithMirror(srv.URL), WithHostArch("amd64"))
			tree, err := f.Fetch(context.Background(), k)
			if err != nil {
				t.Error(err)
				return
			}
			dirs[i] = tree.Dir
		}()
	}
	wg.Wait()
	for path, n := range hits {
		if n != 1 {
			t.Errorf("%s downloaded %d times", path, n)
		}
	}
	if len(hits) != len(files) {
		t.Errorf("%d downloads for %d files", len(hits), len(files))
	}
	for _, d := range dirs[1:] {
		if d != dirs[0] {
			t.Errorf("fetchers disagree on the tree: %v", dirs)
		}
	}
}

// TestCachedTreeTakesTheLocksKernel: a tree cached before the lock gained
// a field (here the guest's command line) comes back with the lock's
// kernel, not the one recorded when it was made.
func TestCachedTreeTakesTheLocksKernel(t *testing.T) {
	final := filepath.Join(t.TempDir(), "6.1-amd64-0123456789abcdef")
	if err := os.MkdirAll(final, 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := json.Marshal(&Tree{Kernel: Kernel{ID: "6.1-amd64"}, Dir: final})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(final, "tree.json"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	k := Kernel{ID: "6.1-amd64", Cmdline: []string{"init_on_alloc=0"}}
	tree, err := lockedTree(k, final, func() (*Tree, error) { return nil, errors.New("must not rebuild a cached tree") })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tree.Kernel.Cmdline, k.Cmdline) || tree.Dir != final {
		t.Errorf("cached tree: kernel %+v, dir %s; want the lock's command line %v, dir %s", tree.Kernel, tree.Dir, k.Cmdline, final)
	}
}

// A download's first progress line comes a second after it started, with
// the rate over that second: a tick on the first read reported one
// buffer in a millisecond (3.8 MB/s on any link). A download done within
// the second has no progress line.
func TestRateReaderTicks(t *testing.T) {
	var ticks []float64
	tick := func(n int64, rate float64) { ticks = append(ticks, rate) }
	if _, err := io.Copy(io.Discard, newRateReader(strings.NewReader(strings.Repeat("x", 1<<20)), tick)); err != nil {
		t.Fatal(err)
	}
	if len(ticks) != 0 {
		t.Errorf("a download done within a second ticked %d times (rates %v)", len(ticks), ticks)
	}
	r := newRateReader(strings.NewReader("abcd"), tick)
	r.start, r.last = r.start.Add(-2*time.Second), r.last.Add(-2*time.Second)
	io.Copy(io.Discard, r)
	if len(ticks) != 1 || ticks[0] > 4 {
		t.Errorf("4 bytes over 2 s: ticks %v, want one of about 2 B/s", ticks)
	}
}
