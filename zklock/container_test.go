package zklock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/internal/testserver"
)

// lockThroughContainerFault takes and releases a fresh name with fault armed
// for the parent's container create, and returns the parent's path and
// whether the driver sent a persistent create of it. (A client cannot tell
// a container from a persistent node by its stat: ZooKeeper 3.8 reports
// EphemeralOwner 0 for both, DataNode hiding the container's marker; the
// wire shows what was asked for.)
func lockThroughContainerFault(t *testing.T, fault containerFault) (d *Driver, parent string, persistent bool) {
	t.Helper()
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	c, d, k := testClient(t, servers, testSession)
	name := uniqueName(t)
	parent = d.parent(name)
	k.mu.Lock()
	k.containerFault = fault
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := c.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock with a fault at the parent's create: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	k.mu.Lock()
	left := k.containerFault
	for _, p := range k.creates {
		persistent = persistent || p == parent
	}
	k.mu.Unlock()
	if left != noContainerFault {
		t.Fatalf("no container create went out: the fault was not driven")
	}
	if persistent {
		// Nothing else removes it.
		t.Cleanup(func() {
			if err := admin.Delete(parent, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				t.Logf("remove %s: %v", parent, err)
			}
		})
	}
	return d, parent, persistent
}

// TestContainerCreateLost: the connection drops with the parent's container
// create unsent. The create is sent again, as a container: before, the
// driver fell back to a persistent create, a parent node that nothing ever
// removes.
func TestContainerCreateLost(t *testing.T) {
	d, parent, persistent := lockThroughContainerFault(t, containerLost)
	if persistent {
		t.Errorf("%s: a persistent create sent after a lost container create (a node never removed)", parent)
	}
	if d.noContainer.Load() {
		t.Errorf("a dropped connection taken for a server without containers")
	}
}

// TestContainerUnimplemented: a server that does not know the container
// create (before 3.5: UNIMPLEMENTED, then the connection closed) gets a
// persistent parent, and the driver stops sending container creates.
func TestContainerUnimplemented(t *testing.T) {
	d, parent, persistent := lockThroughContainerFault(t, containerUnknown)
	if !persistent {
		t.Errorf("%s: no persistent create sent on a server without containers", parent)
	}
	if !d.noContainer.Load() {
		t.Errorf("UNIMPLEMENTED not recognised (go-zookeeper's error for -6 changed? want %q)", errUnimplemented)
	}
}
