//go:build dlock_testhooks

package main

import (
	"os"
	"time"
)

// stallAfterStart is a test hook, built only with the dlock_testhooks tag
// (the end-to-end tests' binary): with DLOCK_TEST_STALL_AFTER_START set to
// a file's path, dlock creates that file once the command's first process
// exists and stalls 3 s before it tells the guard the command's group, so
// that a test can kill dlock in that moment.
func stallAfterStart() {
	p := os.Getenv("DLOCK_TEST_STALL_AFTER_START")
	if p == "" {
		return
	}
	os.WriteFile(p, nil, 0o600)
	time.Sleep(3 * time.Second)
}
