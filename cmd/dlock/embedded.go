//go:build !dlock_noembed

package main

import (
	"context"
	"strings"

	"github.com/dlockio/dlock/etcdlock/embedded"
)

// embeddedBackend is an engine started by dlock for the demo.
type embeddedBackend struct {
	url   string
	label string
}

// startEmbedded starts a single-node etcd in a new temporary directory, so
// that `dlock demo` shows a real engine with no installation; stop shuts it
// down and removes the directory.
func startEmbedded(ctx context.Context) (embeddedBackend, func(), error) {
	srv, err := embedded.Start(ctx, "")
	if err != nil {
		return embeddedBackend{}, nil, err
	}
	eps := strings.Join(srv.Endpoints(), ",")
	return embeddedBackend{
		url:   "etcd://" + eps + "/dlock-demo",
		label: "an embedded single-node etcd (" + eps + ", data in " + srv.Dir() + ")",
	}, func() { srv.Close() }, nil
}
