//go:build dlock_noembed

package main

import (
	"context"
	"errors"
)

// embeddedBackend is an engine started by dlock for the demo; this build
// has none (built with -tags dlock_noembed, which leaves the etcd server
// out of the binary).
type embeddedBackend struct {
	url   string
	label string
}

func startEmbedded(context.Context) (embeddedBackend, func(), error) {
	return embeddedBackend{}, nil, errors.New("this dlock was built without the embedded etcd (-tags dlock_noembed): give the demo an engine with --backend or DLOCK_BACKEND")
}
