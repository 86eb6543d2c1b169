package kernels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/progress"
)

// treeFormat changes whenever the unpacked layout changes, so old cache
// entries are not mistaken for new ones.
const treeFormat = "tree-v1"

// Tree is a pinned kernel fetched, verified and unpacked in the cache.
type Tree struct {
	Kernel Kernel `json:"kernel"`
	// Dir is the cache entry.
	Dir string `json:"dir"`
	// Vmlinuz is the bootable kernel image.
	Vmlinuz string `json:"vmlinuz"`
	// Config is the kernel's .config.
	Config string `json:"config"`
	// KDir is a Kbuild directory for `make -C KDir M=...`.
	KDir string `json:"kdir"`
	// ModulesDir is lib/modules/<release> of the kernel's own modules.
	ModulesDir string `json:"modules_dir"`
}

// Fetcher downloads pinned packages into the cache and unpacks them.
type Fetcher struct {
	cache    string
	mu       sync.Mutex // guards mirror
	mirror   string
	aptDir   string
	client   *http.Client
	hostArch string
	logf     func(format string, args ...any)
	builder  SourceBuilder
	// keepFailed leaves a failed kernel build in the cache to be looked
	// at; it is rebuilt from scratch next time.
	keepFailed bool
}

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithCacheDir sets the cache directory (default: cache.DefaultDir()).
func WithCacheDir(dir string) Option { return func(f *Fetcher) { f.cache = dir } }

// WithMirror sets the Debian mirror (default: Mirror("/etc/apt")).
func WithMirror(url string) Option {
	return func(f *Fetcher) { f.mirror = strings.TrimRight(url, "/") }
}

// WithHTTPClient sets the HTTP client used for downloads.
func WithHTTPClient(c *http.Client) Option { return func(f *Fetcher) { f.client = c } }

// WithLogf sets where progress lines go (default: nowhere).
func WithLogf(logf func(format string, args ...any)) Option {
	return func(f *Fetcher) { f.logf = logf }
}

// WithHostArch sets the build host's architecture (default: HostArch()).
func WithHostArch(arch string) Option { return func(f *Fetcher) { f.hostArch = arch } }

// WithSourceBuilder sets what builds the kernels the lock pins as source
// (Kernel.FromSource); without one, fetching such a kernel fails.
func WithSourceBuilder(b SourceBuilder) Option { return func(f *Fetcher) { f.builder = b } }

// WithKeepFailed leaves a failed kernel build's tree in the cache.
func WithKeepFailed(keep bool) Option { return func(f *Fetcher) { f.keepFailed = keep } }

// NewFetcher returns a Fetcher.
func NewFetcher(opts ...Option) (*Fetcher, error) {
	f := &Fetcher{
		aptDir:   "/etc/apt",
		client:   http.DefaultClient,
		hostArch: HostArch(),
		logf:     func(string, ...any) {},
	}
	for _, o := range opts {
		o(f)
	}
	if f.cache == "" {
		d, err := cache.DefaultDir()
		if err != nil {
			return nil, err
		}
		f.cache = d
	}
	return f, nil
}

// Mirror is the Debian mirror the fetcher downloads from.
func (f *Fetcher) Mirror() (string, error) { return f.mirrorURL() }

// Logf writes a line to the fetcher's log (WithLogf).
func (f *Fetcher) Logf(format string, args ...any) { f.logf(format, args...) }

// CacheDir is the fetcher's cache directory.
func (f *Fetcher) CacheDir() string { return f.cache }

func (f *Fetcher) mirrorURL() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mirror == "" {
		m, err := Mirror(f.aptDir)
		if err != nil {
			return "", err
		}
		f.mirror = m
	}
	return f.mirror, nil
}

// lockedTree returns the complete tree cached at final, or makes it with
// make while holding final's lock: concurrent callers, in this process or
// others, wait for one maker. An entry without tree.json is incomplete and
// removed first.
//
// The cache is keyed by what makes a tree: the returned tree's Kernel is
// k as the lock says now, so that the lock's other fields (the guest's
// command line, its modules) take effect without a new tree.
func lockedTree(k Kernel, final string, make func() (*Tree, error)) (*Tree, error) {
	t, err := lockedTreeOnce(final, make)
	if err != nil {
		return nil, err
	}
	t.Kernel = k
	return t, nil
}

func lockedTreeOnce(final string, make func() (*Tree, error)) (*Tree, error) {
	if t, err := readTree(final); err == nil {
		return t, nil
	}
	lk, err := cache.LockFile(final + ".lock")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if t, err := readTree(final); err == nil {
		return t, nil // another process finished it while we waited
	}
	if err := os.RemoveAll(final); err != nil {
		return nil, err
	}
	return make()
}

func readTree(dir string) (*Tree, error) {
	b, err := os.ReadFile(filepath.Join(dir, "tree.json"))
	if err != nil {
		return nil, err
	}
	var t Tree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ErrNotServed is returned when the mirror no longer serves a pinned package.
var ErrNotServed = errors.New("pinned package is no longer served by the mirror")

// deb returns the path of a verified copy of p in the cache, downloading it
// if needed. A download is hashed while it is written and renamed into place
// only when its SHA-256 matches the lock.
func (f *Fetcher) deb(ctx context.Context, k Kernel, p Package) (string, error) {
	dst := filepath.Join(f.cache, "debs", p.SHA256+".deb")
	return cache.Build(dst, func(tmp string) (string, error) {
		return f.download(ctx, k, p, filepath.Join(tmp, p.Name+".deb"))
	})
}

// download fetches p into out, hashing it on the way, and fails unless it
// matches the lock.
func (f *Fetcher) download(ctx context.Context, k Kernel, p Package, out string) (string, error) {
	mirror, err := f.mirrorURL()
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	url := mirror + "/" + p.Filename
	f.logf("kernel %s: downloading %s %s (%d MB)", k.ID, p.Name, p.Version, p.Size>>20)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("kernel %s: download %s: %w (is the mirror reachable? set %s to override it)", k.ID, p.Name, err, MirrorEnv)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return "", fmt.Errorf("kernel %s: %s %s: %w (HTTP %d for %s); re-pin with `go run ./cmd/kmmap kernels update`",
			k.ID, p.Name, p.Version, ErrNotServed, resp.StatusCode, p.Filename)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("kernel %s: download %s: HTTP %s", k.ID, p.Name, resp.Status)
	}
	w, err := os.Create(out)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	var body io.Reader = newRateReader(resp.Body, func(n int64, rate float64) {
		progress.Update(f.logf, k.ID, "kernel", fmt.Sprintf("downloading %s: %d/%d MB, %.1f MB/s", p.Name, n>>20, p.Size>>20, rate/(1<<20)))
	})
	n, err := io.Copy(io.MultiWriter(w, h), body)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("kernel %s: download %s: %w (interrupted; rerun to start it again)", k.ID, p.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return "", fmt.Errorf("kernel %s: %s %s: SHA-256 mismatch: got %s (%d bytes), the lock pins %s (%d bytes); nothing was cached — check the mirror (%s) or re-pin with `go run ./cmd/kmmap kernels update`",
			k.ID, p.Name, p.Version, got, n, p.SHA256, p.Size, MirrorEnv)
	}
	return out, nil
}

// PageSize is the page size the kernel was configured with, from its
// ReadConfig reads the kernel's config.
func (t *Tree) ReadConfig() (Config, error) {
	c, err := ReadConfig(t.Config)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", t.Kernel.ID, err)
	}
	return c, nil
}

// rateReader calls tick with the bytes read so far and the rate, at most
// once a second, the first time a second after start (last): a tick on
// the first read gave the rate of one buffer in a millisecond, "3.8
// MB/s" whatever the link.
type rateReader struct {
	r     io.Reader
	n     int64
	start time.Time
	last  time.Time
	tick  func(n int64, rate float64)
}

func newRateReader(r io.Reader, tick func(n int64, rate float64)) *rateReader {
	now := time.Now()
	return &rateReader{r: r, start: now, last: now, tick: tick}
}

func (r *rateReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.n += int64(n)
	if now := time.Now(); now.Sub(r.last) >= time.Second {
		r.last = now
		r.tick(r.n, float64(r.n)/max(now.Sub(r.start).Seconds(), 0.001))
	}
	return n, err
}

// BuildEnv is what a SourceBuilder gets from the fetcher.
type BuildEnv struct {
	Cache  string // the cache directory
	Mirror string // the Debian mirror ("" when none is configured)
	Logf   func(format string, args ...any)
}

// SourceBuilder builds a kernel from its pinned linux-source package.
type SourceBuilder interface {
	// Toolchain returns what identifies the toolchain k is built with (it
	// may create it); it is part of the cache key of the built kernel.
	Toolchain(ctx context.Context, k Kernel, env BuildEnv) (string, error)
	// Build unpacks src (the verified .deb), configures it with config (the
	// merged fragments, see Kernel.ConfigText) and builds it under dir, an
	// empty directory that is the kernel's cache entry. The Tree's paths
	// are under dir.
	Build(ctx context.Context, k Kernel, env BuildEnv, src string, config []byte, dir string) (*Tree, error)
}
