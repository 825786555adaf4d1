//go:build integration

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServeLog is startServe with the server's log kept.
func startServeLog(t *testing.T, args ...string) (addr string, log *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = &lockedBuffer{}
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, append(args, "--port", "0"), io.Discard, log, func(a string) {
			select {
			case addrc <- a:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("serve did not shut down")
		}
	})
	select {
	case addr = <-addrc:
		return addr, log
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, log.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	return "", nil
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a client
// that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, client *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forgeflow test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
}

func status(t *testing.T, c *http.Client, method, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// serve --tls-certfile/--tls-keyfile speaks https; --auth-token-file's token is
// required on the API, not on the editor's page.
func TestServeTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, client := selfSigned(t, dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, log := startServeLog(t, "--base-directory", t.TempDir(), "--tls-certfile", certFile, "--tls-keyfile", keyFile, "--auth-token-file", tokenFile)
	base := "https://" + addr
	if !strings.Contains(log.String(), "url=https://") {
		t.Errorf("the log does not give the https URL:\n%s", log)
	}
	if got := status(t, client, "GET", base+"/api/system_stats", ""); got != http.StatusUnauthorized {
		t.Fatalf("without the token: %d", got)
	}
	if got := status(t, client, "GET", base+"/api/system_stats", "tok-123"); got != http.StatusOK {
		t.Fatalf("with the token: %d", got)
	}
	if got := status(t, client, "GET", base+"/api/system_stats?token=tok-123", ""); got != http.StatusOK {
		t.Fatalf("with ?token=: %d", got)
	}
	if got := status(t, client, "POST", base+"/api/interrupt", ""); got != http.StatusUnauthorized {
		t.Fatalf("POST without the token: %d", got)
	}
	if got := status(t, client, "GET", base+"/", ""); got != http.StatusOK {
		t.Fatalf("the editor's page: %d", got)
	}
	// Plain http to the https port fails instead of answering.
	if resp, err := http.Get("http://" + addr + "/api/system_stats"); err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain http answered on the TLS port")
		}
		resp.Body.Close()
	}
}

func TestServeAccessFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-certfile", filepath.Join(dir, "c.pem")}, "go together"},
		{[]string{"--tls-certfile", filepath.Join(dir, "c.pem"), "--tls-keyfile", filepath.Join(dir, "k.pem")}, "TLS"},
		{[]string{"--auth-token", "a", "--auth-token-file", empty}, "not both"},
		{[]string{"--auth-token-file", empty}, "one token"},
		{[]string{"--auth-token-file", filepath.Join(dir, "missing")}, "no such file"},
	} {
		var errb lockedBuffer
		code := serve(context.Background(), append(tc.args, "--base-directory", t.TempDir(), "--port", "0"), io.Discard, &errb, nil)
		if code != exitFailed || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, log %q; want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// Listening beyond loopback without a token is allowed, with a loud warning; with a
// token there is none.
func TestServeWarnsWhenOpen(t *testing.T) {
	_, log := startServeLog(t, "--base-directory", t.TempDir(), "--listen", "0.0.0.0")
	if !strings.Contains(log.String(), "OPEN TO THE NETWORK WITHOUT AN ACCESS TOKEN") {
		t.Fatalf("no warning:\n%s", log)
	}
	_, log = startServeLog(t, "--base-directory", t.TempDir(), "--listen", "0.0.0.0", "--auth-token", "x")
	if strings.Contains(log.String(), "OPEN TO THE NETWORK") {
		t.Fatalf("warning despite a token:\n%s", log)
	}
	_, log = startServeLog(t, "--base-directory", t.TempDir())
	if strings.Contains(log.String(), "OPEN TO THE NETWORK") {
		t.Fatalf("warning on loopback:\n%s", log)
	}
}
