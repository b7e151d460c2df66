package bench

import (
	"context"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
)

// EtcdEngine is one shared etcd client whose interceptors count every
// request this process sends (unary calls and messages sent on streams).
type EtcdEngine struct {
	Client *clientv3.Client
	Addrs  []string
	sent   atomic.Int64
}

// NewEtcdEngine connects to the cluster at endpoints.
func NewEtcdEngine(ctx context.Context, endpoints []string) (*EtcdEngine, error) {
	e := &EtcdEngine{Addrs: endpoints}
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		e.sent.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return countingStream{s, &e.sent}, nil
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// Its warnings about the contexts the harness cancels on purpose
		// would drown the progress log.
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)},
	})
	if err != nil {
		return nil, err
	}
	e.Client = cli
	if _, err := cli.Get(ctx, "peerbench/ping"); err != nil {
		cli.Close()
		return nil, err
	}
	return e, nil
}

type countingStream struct {
	grpc.ClientStream
	n *atomic.Int64
}

func (s countingStream) SendMsg(m any) error {
	s.n.Add(1)
	return s.ClientStream.SendMsg(m)
}

// Close closes the client.
func (e *EtcdEngine) Close() error { return e.Client.Close() }

// Family returns the etcd family; the counter is a plain key.
func (e *EtcdEngine) Family() Family {
	return Family{Name: "etcd", Counter: engines.Etcd(e.Client), Commands: e.sent.Load}
}

// Floor is one Txn put-if-absent and one Delete: the least any etcd lock can
// do. It has no waiting primitive, so a waiter spins.
func (e *EtcdEngine) Floor() Contender {
	cli := e.Client
	return Contender{
		Name: "floor-etcd", Family: "etcd", Kind: Floor, NoWait: true,
		Note: "Txn(create_revision==0 → Put), spin; Delete",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				v := randomValue()
				for {
					r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(name), "=", 0)).
						Then(clientv3.OpPut(name, v)).Commit()
					if err != nil {
						return nil, err
					}
					if r.Succeeded {
						return func(ctx context.Context) error { _, err := cli.Delete(ctx, name); return err }, nil
					}
				}
			}}, nil
		},
	}
}

// Mutex is etcd's own client/v3/concurrency.Mutex, one session per worker as
// its docs show.
func (e *EtcdEngine) Mutex() Contender {
	cli := e.Client
	return Contender{
		Name: "etcd-mutex", Family: "etcd", Kind: Peer,
		Note: "concurrency.NewSession(TTL 10s) per worker, NewMutex per lock",
		NewWorker: func(ctx context.Context) (scenario.Locker, error) {
			s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(LockTTL/time.Second)), concurrency.WithContext(context.WithoutCancel(ctx)))
			if err != nil {
				return nil, err
			}
			return peer{
				lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
					m := concurrency.NewMutex(s, name)
					if err := m.Lock(ctx); err != nil {
						return nil, err
					}
					return m.Unlock, nil
				},
				close: s.Close,
			}, nil
		},
	}
}

// EtcdAddrs returns the etcd client endpoints from DLOCK_TEST_ETCD or the
// defaults of scripts/services.sh.
func EtcdAddrs() []string {
	return addrsFromEnv("DLOCK_TEST_ETCD", "127.0.0.1:12379,127.0.0.1:12479,127.0.0.1:12579")
}

// Version reports the server version of the first endpoint.
func (e *EtcdEngine) Version(ctx context.Context) string {
	st, err := e.Client.Status(ctx, e.Client.Endpoints()[0])
	if err != nil {
		return "unknown"
	}
	return st.Version
}
