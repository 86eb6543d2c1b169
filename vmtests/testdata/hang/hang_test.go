//go:build hang_guest

// Package hang is a guest suite with a test that never ends, for
// TestHungGuestTestNamed.
package hang

import (
	"os"
	"testing"

	"github.com/kmmap/kmmap/vmtests/testmain"
)

func TestMain(m *testing.M) { os.Exit(testmain.Run(m)) }

func TestFine(t *testing.T) {}

func TestHangs(t *testing.T) { select {} }
