//go:build !dlock_testhooks

package main

// stallAfterStart is a test hook: see testhook_on.go.
func stallAfterStart() {}
