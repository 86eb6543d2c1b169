package event

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files frame travels between the fresh line and the module: each
// file lands at its path with its mode, and a cut or corrupt frame, or a
// path that leaves the root, is refused without a file in place.
func TestFilesFrame(t *testing.T) {
	files := []File{
		{Path: "/kmmap/guest.test", Mode: 0o755, Data: bytes.Repeat([]byte("\x7fELF test"), 5000)},
		{Path: "/kmmap/files/demo32", Mode: 0o755, Data: []byte("\x7fELF demo")},
		{Path: "/kmmap/files/empty", Mode: 0o644},
	}
	var b bytes.Buffer
	for _, err := range []error{WriteFiles(&b, files), WriteModule(&b, "kmmap", []byte("ko"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	frame := b.Bytes()
	root := t.TempDir()
	br := NewPortReader(bytes.NewReader(frame))
	paths, err := ReceiveFiles(br, root)
	if err != nil || len(paths) != 3 {
		t.Fatalf("ReceiveFiles: %q, %v", paths, err)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(root, f.Path))
		st, serr := os.Stat(filepath.Join(root, f.Path))
		if err != nil || serr != nil || !bytes.Equal(got, f.Data) || st.Mode().Perm() != f.Mode {
			t.Errorf("%s: %d bytes, mode %v, %v %v; want %d bytes, mode %v", f.Path, len(got), st.Mode(), err, serr, len(f.Data), f.Mode)
		}
	}
	if name, ko, err := ReadModule(br); err != nil || name != "kmmap" || string(ko) != "ko" {
		t.Fatalf("module after the files: %q %q %v", name, ko, err)
	}

	var one bytes.Buffer
	if err := WriteFiles(&one, files[:1]); err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(one.Bytes())
	corrupt[len(corrupt)-5] ^= 1
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"corrupt":  {corrupt, "SHA-256"},
		"cut":      {one.Bytes()[:one.Len()-10], "announced"},
		"escape":   {[]byte(`{"files":[{"path":"/../etc/passwd","size":1}]}` + "\n"), "not an absolute clean path"},
		"relative": {[]byte(`{"files":[{"path":"guest.test","size":1}]}` + "\n"), "not an absolute clean path"},
		"huge":     {[]byte(`{"files":[{"path":"/a","size":999999999999}]}` + "\n"), "over"},
		"not json": {[]byte("\x7fELF\n"), "files"},
	} {
		dir := t.TempDir()
		_, err := ReceiveFiles(NewPortReader(bytes.NewReader(c.in)), dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "kmmap", "*")); len(left) > 0 {
			t.Errorf("%s: left %q behind", name, left)
		}
	}
}
