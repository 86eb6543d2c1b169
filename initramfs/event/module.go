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

// ReadModule reads one frame: the module's name and bytes, checked
// against the header's size and SHA-256.
func ReadModule(r io.Reader) (string, []byte, error) {
	br := bufio.NewReader(r)
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
