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
	name, got, err := ReadModule(NewPortReader(bytes.NewReader(frame)))
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
		if _, _, err := ReadModule(NewPortReader(bytes.NewReader(c.in))); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}

func TestJobBeforeModule(t *testing.T) {
	job := Job{TestArgs: []string{"-test.run=TestX"}, Run: []string{"sh", "-c", "echo 'a\nb'"}}
	fresh := Fresh{Time: 1764584400e9, Entropy: bytes.Repeat([]byte{7}, 32)}
	var b bytes.Buffer
	for _, err := range []error{WriteJob(&b, job), WriteFresh(&b, fresh), WriteModule(&b, "kmmap", []byte("ko"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	br := NewPortReader(&b)
	got, err := ReadJob(br)
	if err != nil || len(got.Run) != 3 || got.Run[2] != job.Run[2] || got.TestArgs[0] != job.TestArgs[0] {
		t.Fatalf("job round trip: %+v, %v", got, err)
	}
	gotFresh, err := ReadFresh(br)
	if err != nil || gotFresh.Time != fresh.Time || !bytes.Equal(gotFresh.Entropy, fresh.Entropy) {
		t.Fatalf("fresh round trip: %+v, %v", gotFresh, err)
	}
	if name, ko, err := ReadModule(br); err != nil || name != "kmmap" || string(ko) != "ko" {
		t.Fatalf("module after the job: %q %q %v", name, ko, err)
	}
	if _, err := ReadJob(NewPortReader(strings.NewReader("module\n"))); err == nil || !strings.Contains(err.Error(), "job") {
		t.Errorf("a job that is not JSON: %v", err)
	}
	for name, c := range map[string]struct {
		in, want string
	}{
		"no entropy": {`{"time":1}` + "\n", "entropy"},
		"no time":    {`{"entropy":"` + strings.Repeat("A", 44) + `"}` + "\n", "no host time"},
		"not json":   {"module\n", "fresh"},
		"cut":        {`{"time":1`, "EOF"},
	} {
		if _, err := ReadFresh(NewPortReader(strings.NewReader(c.in))); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}
