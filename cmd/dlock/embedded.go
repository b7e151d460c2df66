package main

import (
	"context"
	"os"
)

// embeddedBackend is an engine started by dlock for the demo.
type embeddedBackend struct {
	url   string
	label string
}

// startEmbedded starts the demo's default engine.
//
// TODO(etcd): switch to an embedded single-node etcd when
// github.com/dlockio/dlock/etcdlock/embedded lands; until then an
// in-process engine in a private namespace.
func startEmbedded(context.Context) (embeddedBackend, func(), error) {
	_ = os.Getpid
	return embeddedBackend{url: "mem://demo-" + randomID(), label: "an in-process engine (mem://)"}, func() {}, nil
}
