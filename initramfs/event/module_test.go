package event

import (
	"bytes"
	"strings"
	"testing"
)

func TestModuleFrame(t *testing.T) {
	ko := bytes.Repeat([]byte("\x7fELF\n\x00module"), 1000)
	var b bytes.Buffer
	if err := WriteModule(&b, "kmmap", ko); err != nil {
		t.Fatal(err)
	}
	frame := b.Bytes()
	name, got, err := ReadModule(bytes.NewReader(frame))
	if err != nil || name != "kmmap" || !bytes.Equal(got, ko) {
		t.Fatalf("round trip: %q, %d bytes, %v", name, len(got), err)
	}

	corrupt := bytes.Clone(frame)
	corrupt[len(corrupt)-3] ^= 1
	var hostErr bytes.Buffer
	if err := WriteModuleError(&hostErr, "make failed: main.c:3: error"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"corrupt":    {corrupt, "SHA-256"},
		"truncated":  {frame[:len(frame)-10], "announced"},
		"no header":  {[]byte("garbage"), "module header"},
		"bad json":   {[]byte("{\n"), "module header"},
		"huge":       {[]byte(`{"name":"kmmap","size":99999999999}` + "\n"), "size outside"},
		"host error": {hostErr.Bytes(), "make failed: main.c:3: error"},
	} {
		if _, _, err := ReadModule(bytes.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}
