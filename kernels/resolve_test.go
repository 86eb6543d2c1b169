package kernels

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// fakeIndex is a Packages file; each stanza is name, version, arch, depends.
func fakeIndex(t *testing.T, stanzas ...[4]string) []byte {
	var b bytes.Buffer
	for i, s := range stanzas {
		fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\n", s[0], s[1], s[2])
		if s[3] != "" {
			fmt.Fprintf(&b, "Depends: %s\n", s[3])
		}
		fmt.Fprintf(&b, "Filename: pool/main/l/linux/%s_%s_%s.deb\nSize: %d\nSHA256: %064x\nDescription: x\n long\n\n", s[0], s[1], s[2], 1000+i, i+1)
	}
	var out bytes.Buffer
	w, err := xz.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b.Bytes())
	w.Close()
	return out.Bytes()
}

// serveIndexes is a fake mirror serving the indexes idx and every pool
// file but those named in missing.
func serveIndexes(t *testing.T, idx map[string][]byte, missing ...string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/pool/") && !slices.Contains(missing, strings.TrimPrefix(r.URL.Path, "/")) {
			return // 200, no body: the resolver only asks whether it is there
		}
		b, ok := idx[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestUpdateAgainstFakeArchive(t *testing.T) {
	old := [][4]string{
		{"linux-headers-6.12.94+deb13-amd64", "6.12.94-1", "amd64", "gcc-14"},
		{"linux-headers-6.12.94+deb13-common", "6.12.94-1", "all", ""},
		{"linux-image-6.12.94+deb13-amd64-unsigned", "6.12.94-1", "amd64", ""},
		{"linux-kbuild-6.12.94+deb13", "6.12.94-1", "amd64", ""},
	}
	newer := [][4]string{
		{"linux-headers-6.12.107+deb13-amd64", "6.12.107-1", "amd64", "linux-kbuild-6.12.107+deb13, gcc-14"},
		{"linux-headers-6.12.107+deb13-common", "6.12.107-1", "all", ""},
		{"linux-image-6.12.107+deb13-amd64-unsigned", "6.12.107-1", "amd64", ""},
		{"linux-kbuild-6.12.107+deb13", "6.12.107-1", "amd64", ""},
		{"linux-headers-6.12.107+deb13-cloud-amd64", "6.12.107-1", "amd64", "gcc-14"},
	}
	split := [][4]string{
		{"linux-headers-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "amd64", "gcc-14-for-host"},
		{"linux-headers-7.3.4+deb13-common", "7.3.4-1~bpo13+1", "all", ""},
		{"linux-binary-unsigned-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "amd64", ""},
		{"linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "amd64", ""},
		{"linux-modules-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "amd64", ""},
		{"linux-image-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "amd64", ""},
		{"linux-kbuild-7.3.4+deb13", "7.3.4-1~bpo13+1", "amd64", ""},
	}
	mirror := serveIndexes(t, map[string][]byte{
		"/dists/trixie/main/binary-amd64/Packages.xz":           fakeIndex(t, append(old, newer...)...),
		"/dists/trixie-backports/main/binary-amd64/Packages.xz": fakeIndex(t, split...),
	})
	l := &Lock{Kernels: []Kernel{
		{ID: "6.12-amd64", Arch: "amd64", Suite: "trixie", Series: "6.12", Flavour: "amd64", Release: "6.12.94+deb13-amd64"},
		{ID: "7.3-amd64", Arch: "amd64", Suite: "trixie-backports", Series: "7.3", Flavour: "amd64"},
	}}
	r := &Resolver{Mirror: mirror, HostArches: []string{"amd64"}}
	changes, err := r.Update(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || changes[0].To != "6.12.107+deb13-amd64" || changes[0].From != "6.12.94+deb13-amd64" || changes[1].To != "7.3.4+deb13-amd64" {
		t.Fatalf("changes = %+v", changes)
	}
	names := func(k Kernel) string {
		var n []string
		for _, p := range k.Packages {
			n = append(n, p.Role+":"+p.Name)
		}
		return strings.Join(n, " ")
	}
	if got, want := names(l.Kernels[0]), "image:linux-image-6.12.107+deb13-amd64-unsigned headers:linux-headers-6.12.107+deb13-amd64 headers:linux-headers-6.12.107+deb13-common kbuild:linux-kbuild-6.12.107+deb13"; got != want {
		t.Errorf("6.12 packages:\n got %s\nwant %s", got, want)
	}
	if got, want := names(l.Kernels[1]), "image:linux-binary-unsigned-7.3.4+deb13-amd64 image:linux-base-7.3.4+deb13-amd64 image:linux-modules-7.3.4+deb13-amd64 headers:linux-headers-7.3.4+deb13-amd64 headers:linux-headers-7.3.4+deb13-common kbuild:linux-kbuild-7.3.4+deb13"; got != want {
		t.Errorf("7.3 packages:\n got %s\nwant %s", got, want)
	}
	if l.Kernels[0].Compiler != "gcc-14" || l.Kernels[1].Compiler != "gcc-14" {
		t.Errorf("compilers: %q %q", l.Kernels[0].Compiler, l.Kernels[1].Compiler)
	}
	if err := l.check(); err != nil {
		t.Errorf("updated lock does not check: %v", err)
	}
	// Nothing newer: no change.
	if changes, err := r.Update(context.Background(), l); err != nil || len(changes) != 0 {
		t.Errorf("second update: %v, %v", changes, err)
	}
}

func TestUpdateSuiteNotServed(t *testing.T) {
	r := &Resolver{Mirror: serveIndexes(t, nil), HostArches: []string{"amd64"}}
	l := &Lock{Kernels: []Kernel{{ID: "9.9-amd64", Arch: "amd64", Suite: "nonesuch", Series: "9.9", Flavour: "amd64"}}}
	if _, err := r.Update(context.Background(), l); err == nil || !strings.Contains(err.Error(), `"nonesuch"`) {
		t.Errorf("err = %v, want one naming the suite", err)
	}
}

// TestUpdateSkipsUnservedABI: a mirror that lists an ABI but does not serve
// its files (seen: 6.12.117 for ppc64el and s390x) gets the newest ABI it
// serves whole, and says so; one that serves none of them is an error
// naming what is missing.
func TestUpdateSkipsUnservedABI(t *testing.T) {
	pkgs := [][4]string{
		{"linux-headers-6.12.107+deb13-s390x", "6.12.107-1", "s390x", "gcc-14"},
		{"linux-headers-6.12.107+deb13-common", "6.12.107-1", "all", ""},
		{"linux-image-6.12.107+deb13-s390x", "6.12.107-1", "s390x", ""},
		{"linux-headers-6.12.117+deb13-s390x", "6.12.117-1", "s390x", "gcc-14"},
		{"linux-headers-6.12.117+deb13-common", "6.12.117-1", "all", ""},
		{"linux-image-6.12.117+deb13-s390x", "6.12.117-1", "s390x", ""},
	}
	kbuild := [][4]string{
		{"linux-kbuild-6.12.107+deb13", "6.12.107-1", "amd64", ""},
		{"linux-kbuild-6.12.117+deb13", "6.12.117-1", "amd64", ""},
	}
	idx := map[string][]byte{
		"/dists/trixie/main/binary-s390x/Packages.xz": fakeIndex(t, pkgs...),
		"/dists/trixie/main/binary-amd64/Packages.xz": fakeIndex(t, kbuild...),
	}
	k := Kernel{ID: "6.12-s390x", Arch: "s390x", Suite: "trixie", Series: "6.12", Flavour: "s390x"}
	var said []string
	r := &Resolver{Mirror: serveIndexes(t, idx, "pool/main/l/linux/linux-image-6.12.117+deb13-s390x_6.12.117-1_s390x.deb"), HostArches: []string{"amd64"},
		Logf: func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }}
	got, err := r.Resolve(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Release != "6.12.107+deb13-s390x" {
		t.Errorf("release %s, want the newest served whole, 6.12.107+deb13-s390x", got.Release)
	}
	if len(said) != 1 || !strings.Contains(said[0], "linux-image-6.12.117+deb13-s390x") {
		t.Errorf("said %q, want a line naming the unserved file", said)
	}
	r = &Resolver{Mirror: serveIndexes(t, idx, "pool/main/l/linux/linux-image-6.12.117+deb13-s390x_6.12.117-1_s390x.deb", "pool/main/l/linux/linux-image-6.12.107+deb13-s390x_6.12.107-1_s390x.deb"), HostArches: []string{"amd64"}}
	if _, err := r.Resolve(context.Background(), k); err == nil || !strings.Contains(err.Error(), "serves none") || !strings.Contains(err.Error(), "6.12.107") {
		t.Errorf("err = %v, want one saying no ABI is served whole, naming what is missing", err)
	}
}
