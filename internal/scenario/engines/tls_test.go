package engines_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestOfEtcdTLS is the demo's counter over etcds://: the counter rides the
// driver's own TLS connection (dlock demo used to dial a plain one of its
// own, and failed on a TLS-only cluster).
func TestOfEtcdTLS(t *testing.T) {
	bin := os.Getenv(testserver.EnvEtcdBin)
	if bin == "" {
		if testserver.InCI() {
			t.Fatalf("%s is not set (scripts/services.sh up sets it)", testserver.EnvEtcdBin)
		}
		t.Skipf("%s is not set: run scripts/services.sh up", testserver.EnvEtcdBin)
	}
	dir := t.TempDir()
	ca, cert, key := tlsFiles(t, dir)
	t.Setenv(etcdlock.EnvCACert, ca)
	client, peer := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--name", "tls", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "https://"+client, "--advertise-client-urls", "https://"+client,
		"--cert-file", cert, "--key-file", key,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "tls=http://"+peer, "--log-level", "error")
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })

	url := "etcds://" + client + "/dlock-tls-test"
	var ls []scenario.Locker
	var cs []scenario.Counter
	deadline := time.Now().Add(30 * time.Second)
	for len(ls) < 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := dlock.Open(ctx, url)
		cancel()
		if err != nil {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(log.Name())
				t.Fatalf("open %s: %v\netcd's log:\n%s", url, err, b)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Cleanup(func() { c.Close() })
		counter, err := engines.Of(c)
		if err != nil {
			t.Fatal(err)
		}
		ls, cs = append(ls, scenario.Client(c)), append(cs, counter)
	}
	r, err := scenario.SharedCounter(context.Background(), ls, cs, scenario.CounterConfig{Name: "tls-counter", Increments: 10, FailFast: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Final != 20 || r.OrderErr() != nil {
		t.Fatalf("counter %d, want 20; order: %v", r.Final, r.OrderErr())
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// tlsFiles writes a CA and a server certificate for 127.0.0.1 signed by it.
func tlsFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey := newKey(), newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dlock test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(fmt.Errorf("server key: %w", err))
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}
