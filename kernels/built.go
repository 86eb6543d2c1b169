package kernels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmmap/kmmap/internal/cache"
)

// builtFormat changes whenever the layout of a built kernel changes.
const builtFormat = "built-v1"

// fetchBuilt returns the tree of a kernel built from source, building it
// if the cache lacks it. The entry is keyed by the source's SHA-256, the
// config and the toolchain; it is built in place under a file lock and
// becomes visible when its tree.json is written, last.
func (f *Fetcher) fetchBuilt(ctx context.Context, k Kernel) (*Tree, error) {
	e, err := f.builtEntry(ctx, k)
	if err != nil {
		return nil, err
	}
	return lockedTree(k, e.final, func() (*Tree, error) { return f.build(ctx, k, e.env, e.src, e.config, e.final) })
}

// Built reports whether the cache holds kernel k, built from source,
// complete: whether Fetch returns without a build. It may make the
// toolchain root the build would use (its name is part of the key).
func (f *Fetcher) Built(ctx context.Context, k Kernel) (bool, error) {
	e, err := f.builtEntry(ctx, k)
	if err != nil {
		return false, err
	}
	_, err = readTree(e.final)
	return err == nil, nil
}

// builtEntry is where the cache keeps kernel k built from source, and
// what builds it.
type builtEntry struct {
	final  string
	env    BuildEnv
	src    Package
	config []byte
}

func (f *Fetcher) builtEntry(ctx context.Context, k Kernel) (builtEntry, error) {
	if f.builder == nil {
		return builtEntry{}, fmt.Errorf("kernel %s is built from source and this fetcher has no builder (kernels.WithSourceBuilder)", k.ID)
	}
	pkgs, err := k.packagesFor(f.hostArch)
	if err != nil {
		return builtEntry{}, err
	}
	config, err := k.ConfigText()
	if err != nil {
		return builtEntry{}, err
	}
	mirror, _ := f.mirrorURL() // needed only for what the cache lacks; errors surface there
	env := BuildEnv{Cache: f.cache, Mirror: mirror, Logf: f.logf}
	tc, err := f.builder.Toolchain(ctx, k, env)
	if err != nil {
		return builtEntry{}, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", treeFormat, builtFormat, pkgs[0].SHA256, tc, k.Release)
	if len(k.Make) > 0 { // so that the kernels built before Make existed keep their key
		fmt.Fprintf(h, "make %q\n", k.Make)
	}
	h.Write(config)
	final := filepath.Join(f.cache, "kernels", k.ID+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	return builtEntry{final: final, env: env, src: pkgs[0], config: config}, nil
}

// build makes the tree of k from its source package in final.
func (f *Fetcher) build(ctx context.Context, k Kernel, env BuildEnv, src Package, config []byte, final string) (*Tree, error) {
	deb, err := f.deb(ctx, k, src)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(final, 0o755); err != nil {
		return nil, err
	}
	t, err := f.builder.Build(ctx, k, env, deb, config, final)
	if err != nil {
		if !f.keepFailed {
			os.RemoveAll(final)
		}
		return nil, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	t.Kernel, t.Dir = k, final
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, err
	}
	return t, cache.WriteFileAtomic(filepath.Join(final, "tree.json"), b, 0o644)
}
