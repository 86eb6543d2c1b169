package kernels

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
)

// index is one Debian Packages index: package name -> every version served.
type index map[string][]stanza

type stanza map[string]string

// fetchIndex downloads and parses dists/<suite>/main/binary-<arch>/Packages.xz.
func fetchIndex(ctx context.Context, client *http.Client, mirror, suite, arch string) (index, error) {
	url := fmt.Sprintf("%s/dists/%s/main/binary-%s/Packages.xz", mirror, suite, arch)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("package index %s/%s: %w (set %s to a reachable Debian mirror)", suite, arch, err, MirrorEnv)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("package index %s/%s: HTTP %s (does the mirror serve suite %q?)", suite, arch, resp.Status, suite)
	}
	xr, err := xz.NewReader(bufio.NewReaderSize(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("package index %s/%s: %w", suite, arch, err)
	}
	return parseIndex(xr, func(name string) bool { return strings.HasPrefix(name, "linux-") })
}

// parseIndex reads deb822 stanzas, keeping the packages keep accepts.
func parseIndex(r io.Reader, keep func(string) bool) (index, error) {
	idx := index{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	cur := stanza{}
	var last string
	flush := func() {
		if n := cur["Package"]; n != "" && keep(n) {
			idx[n] = append(idx[n], cur)
		}
		cur, last = stanza{}, ""
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += "\n" + line
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if ok {
				last = k
				cur[k] = strings.TrimSpace(v)
			}
		}
	}
	flush()
	return idx, sc.Err()
}

func (s stanza) pkg(role string) (Package, error) {
	size, err := strconv.ParseInt(s["Size"], 10, 64)
	if err != nil {
		return Package{}, fmt.Errorf("package %s: bad Size %q", s["Package"], s["Size"])
	}
	return Package{
		Role: role, Name: s["Package"], Version: s["Version"], Arch: s["Architecture"],
		Filename: s["Filename"], Size: size, SHA256: s["SHA256"],
	}, nil
}

// get returns the stanza of name at version (any version when version is "").
func (idx index) get(name, version string) (stanza, bool) {
	for _, s := range idx[name] {
		if version == "" || s["Version"] == version {
			return s, true
		}
	}
	return nil, false
}

func has(idx index, name, version string) bool {
	_, ok := idx.get(name, version)
	return ok
}

var gccRe = regexp.MustCompile(`\bgcc-(\d+)\b`)

// abiRe matches linux-headers-<abi>-<flavour>. Debian's ABI names are
// "5.10.0-32", "6.1.0-50" (up to bookworm) and "6.12.107+deb13",
// "7.3.4+deb13" (from trixie).
func abiRe(series, flavour string) *regexp.Regexp {
	return regexp.MustCompile(`^linux-headers-(` + regexp.QuoteMeta(series) + `\.\d+(?:-\d+|\+deb\d+))-` + regexp.QuoteMeta(flavour) + `$`)
}

// abiLess orders "6.1.0-47" before "6.1.0-50".
func abiLess(a, b string) bool {
	pa, pb := strings.FieldsFunc(a, splitABI), strings.FieldsFunc(b, splitABI)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

func splitABI(r rune) bool { return r == '.' || r == '-' || r == '+' }

// Resolver re-pins kernels to the newest ABI their suite serves.
type Resolver struct {
	Mirror     string
	Client     *http.Client
	HostArches []string // kbuild is pinned for each of these build hosts
	// Logf, when set, hears of an ABI passed over.
	Logf    func(string, ...any)
	indexes map[string]index
}

func (r *Resolver) index(ctx context.Context, suite, arch string) (index, error) {
	key := suite + "/" + arch
	if idx, ok := r.indexes[key]; ok {
		return idx, nil
	}
	if r.indexes == nil {
		r.indexes = map[string]index{}
	}
	c := r.Client
	if c == nil {
		c = http.DefaultClient
	}
	idx, err := fetchIndex(ctx, c, r.Mirror, suite, arch)
	if err != nil {
		return nil, err
	}
	r.indexes[key] = idx
	return idx, nil
}

// Resolve returns k pinned to the newest ABI of its series and flavour that
// its suite serves, with every package's version, filename and SHA-256. A
// mirror that lists an ABI but does not serve every one of its files (a
// partial mirror or a cache: seen for ppc64el and s390x) is passed over
// for the newest ABI it serves whole, which the log says.
func (r *Resolver) Resolve(ctx context.Context, k Kernel) (Kernel, error) {
	if k.FromSource() {
		return r.resolveBuilt(ctx, k)
	}
	idx, err := r.index(ctx, k.Suite, k.Arch)
	if err != nil {
		return k, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	re := abiRe(k.Series, k.Flavour)
	var abis []string
	for name := range idx {
		if m := re.FindStringSubmatch(name); m != nil {
			abis = append(abis, m[1])
		}
	}
	if len(abis) == 0 {
		return k, fmt.Errorf("kernel %s: suite %s serves no linux-headers-%s.*-%s for %s", k.ID, k.Suite, k.Series, k.Flavour, k.Arch)
	}
	slices.SortFunc(abis, func(a, b string) int {
		switch {
		case abiLess(b, a):
			return -1
		case abiLess(a, b):
			return 1
		}
		return 0
	})
	var missing []string
	for _, abi := range abis {
		out, err := r.resolveABI(ctx, k, idx, abi)
		if err != nil {
			return k, err
		}
		gone, err := r.unserved(ctx, out.Packages)
		if err != nil {
			return k, fmt.Errorf("kernel %s: %w", k.ID, err)
		}
		if gone == "" {
			if len(missing) > 0 && r.Logf != nil {
				r.Logf("kernel %s: pinned to %s; the mirror lists newer but does not serve %s", k.ID, out.Release, strings.Join(missing, ", "))
			}
			return out, nil
		}
		missing = append(missing, gone)
		if len(missing) == 3 {
			break
		}
	}
	return k, fmt.Errorf("kernel %s: the mirror %s lists %s but serves none of the newest whole: %s missing (is it a partial mirror? set %s to another)", k.ID, r.Mirror, strings.Join(abis[:len(missing)], ", "), strings.Join(missing, ", "), MirrorEnv)
}

// unserved returns the first of pkgs whose file the mirror does not serve
// (HTTP 404 to a HEAD request), "" when it serves them all.
func (r *Resolver) unserved(ctx context.Context, pkgs []Package) (string, error) {
	c := r.Client
	if c == nil {
		c = http.DefaultClient
	}
	for _, p := range pkgs {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, r.Mirror+"/"+p.Filename, nil)
		if err != nil {
			return "", err
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return p.Filename, nil
		case resp.StatusCode != http.StatusOK:
			return "", fmt.Errorf("%s: HTTP %s", p.Filename, resp.Status)
		}
	}
	return "", nil
}

// resolveABI pins k to abi, one of the ABIs idx lists.
func (r *Resolver) resolveABI(ctx context.Context, k Kernel, idx index, abi string) (Kernel, error) {
	release := abi + "-" + k.Flavour
	headers, _ := idx.get("linux-headers-"+release, "")
	version := headers["Version"]
	out := k
	out.Release = release
	out.Packages = nil
	if m := gccRe.FindStringSubmatch(headers["Depends"]); m != nil {
		out.Compiler = "gcc-" + m[1]
	}
	add := func(idx index, role, name string) error {
		s, ok := idx.get(name, version)
		if !ok {
			return fmt.Errorf("kernel %s: suite %s does not serve %s %s", k.ID, k.Suite, name, version)
		}
		p, err := s.pkg(role)
		if err != nil {
			return err
		}
		out.Packages = append(out.Packages, p)
		return nil
	}
	// The image package: from 7.x split into the kernel (binary), its
	// config and System.map (base) and its modules; before, one package,
	// -unsigned where the plain one is a signed wrapper.
	var images []string
	switch {
	case has(idx, "linux-binary-unsigned-"+release, version):
		images = []string{"linux-binary-unsigned-" + release, "linux-base-" + release, "linux-modules-" + release}
	case has(idx, "linux-image-"+release+"-unsigned", version):
		images = []string{"linux-image-" + release + "-unsigned"}
	default:
		images = []string{"linux-image-" + release}
	}
	for _, name := range images {
		if err := add(idx, RoleImage, name); err != nil {
			return k, err
		}
	}
	for _, name := range []string{"linux-headers-" + release, "linux-headers-" + abi + "-common"} {
		if err := add(idx, RoleHeaders, name); err != nil {
			return k, err
		}
	}
	// kbuild is named by series up to bookworm, by ABI from trixie.
	for _, host := range r.HostArches {
		hidx, err := r.index(ctx, k.Suite, host)
		if err != nil {
			return k, fmt.Errorf("kernel %s: %w", k.ID, err)
		}
		kbuild := "linux-kbuild-" + abi
		if !has(hidx, kbuild, version) {
			kbuild = "linux-kbuild-" + k.Series
		}
		if err := add(hidx, RoleKbuild, kbuild); err != nil {
			return k, err
		}
	}
	return out, nil
}

// Change is one kernel whose pin an update moved.
type Change struct {
	ID       string
	From, To string // releases ("" when unpinned before)
}

// Update re-resolves every kernel of l in place and returns what changed.
func (r *Resolver) Update(ctx context.Context, l *Lock) ([]Change, error) {
	var changes []Change
	for i, k := range l.Kernels {
		nk, err := r.Resolve(ctx, k)
		if err != nil {
			return nil, err
		}
		if nk.Release != k.Release || nk.Compiler != k.Compiler || !slices.Equal(nk.Packages, k.Packages) {
			changes = append(changes, Change{ID: k.ID, From: k.Release, To: nk.Release})
		}
		l.Kernels[i] = nk
	}
	if t := l.Checkpatch; t != nil {
		p, err := r.resolveSource(ctx, t)
		if err != nil {
			return nil, err
		}
		if p != t.Package {
			changes = append(changes, Change{ID: "checkpatch", From: t.Package.Version, To: p.Version})
			t.Package = p
		}
	}
	return changes, nil
}

// resolveBuilt pins a kernel built from source to the newest
// linux-source-<series> of its suite; its release is the upstream version
// with "-kmmap-<flavour>" as its local version.
func (r *Resolver) resolveBuilt(ctx context.Context, k Kernel) (Kernel, error) {
	p, err := r.newestSource(ctx, k.Suite, k.Series, RoleSource)
	if err != nil {
		return k, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	upstream, _, _ := strings.Cut(p.Version, "-")
	out := k
	out.Packages = []Package{p}
	out.Release = upstream + "-kmmap-" + k.Flavour
	return out, nil
}

// resolveSource pins the newest linux-source-<series> of the tool's suite.
func (r *Resolver) resolveSource(ctx context.Context, t *Tool) (Package, error) {
	p, err := r.newestSource(ctx, t.Suite, t.Series, "checkpatch")
	if err != nil {
		return Package{}, fmt.Errorf("checkpatch: %w", err)
	}
	return p, nil
}

// newestSource pins the newest linux-source-<series> suite serves.
func (r *Resolver) newestSource(ctx context.Context, suite, series, role string) (Package, error) {
	arch := "amd64"
	if len(r.HostArches) > 0 {
		arch = r.HostArches[0]
	}
	idx, err := r.index(ctx, suite, arch)
	if err != nil {
		return Package{}, err
	}
	name := "linux-source-" + series
	var best stanza
	for _, s := range idx[name] {
		if best == nil || abiLess(best["Version"], s["Version"]) {
			best = s
		}
	}
	if best == nil {
		return Package{}, fmt.Errorf("suite %s does not serve %s", suite, name)
	}
	return best.pkg(role)
}
