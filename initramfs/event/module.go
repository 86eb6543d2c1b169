package event

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ModulePort is the virtio-serial port the host sends the module under
// test through. The guest boots while the host still builds the module:
// an edit's rebuild overlaps the kernel's boot instead of preceding it.
const ModulePort = "kmmap-module"

// maxModule bounds a module frame (kmmap.ko is ~0.5 MB with debug info).
const maxModule = 64 << 20

// ModuleHeader is the JSON line before the module's bytes on ModulePort:
// the module's name (from its .modinfo), its size and SHA-256, or Error
// when the host could not build it (no bytes follow).
type ModuleHeader struct {
	Name   string `json:"name,omitempty"`
	Size   int    `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
}

// WriteModule sends a module (name, bytes) as one frame.
func WriteModule(w io.Writer, name string, ko []byte) error {
	sum := sha256.Sum256(ko)
	h, err := json.Marshal(ModuleHeader{Name: name, Size: len(ko), SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return err
	}
	if _, err := w.Write(append(h, '\n')); err != nil {
		return err
	}
	_, err = w.Write(ko)
	return err
}

// WriteModuleError tells the guest the module will not come, and why.
func WriteModuleError(w io.Writer, why string) error {
	h, err := json.Marshal(ModuleHeader{Error: why})
	if err != nil {
		return err
	}
	_, err = w.Write(append(h, '\n'))
	return err
}

// maxJob bounds the job line (a command's arguments and environment).
const maxJob = 1 << 20

// WriteJob sends the run's job: one JSON line, before the module's frame.
func WriteJob(w io.Writer, j Job) error { return writeLine(w, j) }

// WriteFresh sends the Fresh line.
func WriteFresh(w io.Writer, f Fresh) error { return writeLine(w, f) }

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadJob reads the job line from br.
func ReadJob(br *bufio.Reader) (Job, error) {
	var j Job
	return j, readLine(br, "job", &j)
}

// ReadFresh reads the Fresh line from br.
func ReadFresh(br *bufio.Reader) (Fresh, error) {
	var f Fresh
	if err := readLine(br, "fresh", &f); err != nil {
		return f, err
	}
	if f.Time <= 0 || len(f.Entropy) < 32 {
		return f, fmt.Errorf("fresh: no host time, or under 32 bytes of entropy")
	}
	return f, nil
}

func readLine(br *bufio.Reader, what string, v any) error {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("%s: longer than %d bytes", what, br.Size())
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("%s %q: %w", what, line, err)
	}
	return nil
}

// NewPortReader reads ModulePort: the job, then the module's frame.
func NewPortReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, maxJob) }

// ReadModule reads one frame: the module's name and bytes, checked
// against the header's size and SHA-256.
func ReadModule(br *bufio.Reader) (string, []byte, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return "", nil, fmt.Errorf("module header: %w", err)
	}
	var h ModuleHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return "", nil, fmt.Errorf("module header %q: %w", line, err)
	}
	if h.Error != "" {
		return "", nil, errors.New("the host has no module: " + h.Error)
	}
	if h.Name == "" || h.Size <= 0 || h.Size > maxModule {
		return "", nil, fmt.Errorf("module header %q: no name, or size outside 1..%d", line, maxModule)
	}
	ko := make([]byte, h.Size)
	if _, err := io.ReadFull(br, ko); err != nil {
		return "", nil, fmt.Errorf("module %s: %d bytes announced: %w", h.Name, h.Size, err)
	}
	if sum := sha256.Sum256(ko); hex.EncodeToString(sum[:]) != h.SHA256 {
		return "", nil, fmt.Errorf("module %s: SHA-256 %x, header says %s (corrupted on the way)", h.Name, sum, h.SHA256)
	}
	return h.Name, ko, nil
}
