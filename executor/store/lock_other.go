//go:build !unix

package store

import (
	"os"
	"time"
)

// lockFile does nothing here: bbolt's own lock guards the file once it is opened.
func lockFile(*os.File, time.Duration) error { return nil }

func unlockFile(*os.File) {}
