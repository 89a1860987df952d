package sftpd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// mapAuth is an in-memory Authenticator: the test double for the
// PostgreSQL tenant store.
type mapAuth struct {
	mu        sync.Mutex
	passwords map[string]string // tenant -> bcrypt hash
	keys      map[string][]ssh.PublicKey
}

func newMapAuth() *mapAuth {
	return &mapAuth{passwords: map[string]string{}, keys: map[string][]ssh.PublicKey{}}
}

func (a *mapAuth) CheckPassword(_ context.Context, user string, password []byte) (bool, error) {
	a.mu.Lock()
	h, ok := a.passwords[user]
	a.mu.Unlock()
	if !ok {
		return false, nil
	}
	return CheckPasswordHash(h, password), nil
}

func (a *mapAuth) AuthorizedKeys(_ context.Context, user string) ([]ssh.PublicKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[user], nil
}

func (a *mapAuth) setPassword(t *testing.T, user, password string) {
	t.Helper()
	h, err := HashPassword([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.passwords[user] = h
}

func (a *mapAuth) addKey(user string, k ssh.PublicKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keys[user] = append(a.keys[user], k)
}

// lockedBuffer collects log output from the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// uploadLog records OnUpload calls.
type uploadLog struct {
	mu    sync.Mutex
	calls []string // "tenant/name"
}

func (u *uploadLog) record(tenant, name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, tenant+"/"+name)
}

func (u *uploadLog) list() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.calls...)
}

type testServer struct {
	srv     *Server
	auth    *mapAuth
	dataDir string
	root    string // the homes
	addr    string
	port    string
	uploads *uploadLog
	logs    *lockedBuffer
}

func (ts *testServer) home(tenant string) string { return filepath.Join(ts.root, tenant) }

// startServer runs a server on 127.0.0.1 for the test's duration.
func startServer(t *testing.T, auth *mapAuth, opts ...Option) *testServer {
	t.Helper()
	ts := &testServer{auth: auth, dataDir: t.TempDir(), uploads: &uploadLog{}, logs: &lockedBuffer{}}
	ts.root = filepath.Join(ts.dataDir, "sftp")
	logger := newTextLogger(ts.logs)
	opts = append([]Option{WithLogger(logger), WithOnUpload(ts.uploads.record)}, opts...)
	srv, err := New(ts.root, auth, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	_, ts.port, _ = net.SplitHostPort(ts.addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		if t.Failed() || os.Getenv("SFTPD_TEST_LOG") != "" {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

// goKey makes an ed25519 key for the Go SSH client.
func goKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialFrom connects a Go SSH client from localIP ("" for any).
func (ts *testServer) dialFrom(localIP, user string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            auth,
		HostKeyCallback: ssh.FixedHostKey(ts.srv.signer.PublicKey()),
		Timeout:         10 * time.Second,
	}
	sc, chans, reqs, err := ssh.NewClientConn(c, ts.addr, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

func (ts *testServer) sftpClient(t *testing.T, user string, auth ...ssh.AuthMethod) (*ssh.Client, *sftp.Client) {
	t.Helper()
	c, err := ts.dialFrom("", user, auth...)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sftp.NewClient(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(); c.Close() })
	return c, sc
}

// --- OpenSSH clients ---

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// opensshKey creates a key pair with ssh-keygen and authorises it for tenant.
func (ts *testServer) opensshKey(t *testing.T, tenant string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id_"+tenant)
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", tenant, "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ts.auth.addKey(tenant, k)
	return path
}

// sshOpts are the options every OpenSSH client gets: our key only, the
// server's real host key pinned, no user config, agent or prompts.
func (ts *testServer) sshOpts(t *testing.T, key string) []string {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := "[127.0.0.1]:" + ts.port + " " + string(ssh.MarshalAuthorizedKey(ts.srv.signer.PublicKey()))
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{
		"-F", "/dev/null", "-i", key,
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + kh,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
	}
}

// runTool runs an OpenSSH client with a deadline and returns its output.
func runTool(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exitCode = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", name, err)
	}
	return o.String(), e.String(), exitCode
}

// sftpBatch runs OpenSSH sftp in batch mode as tenant.
func (ts *testServer) sftpBatch(t *testing.T, key, tenant, batch string) (stdout, stderr string, exitCode int) {
	t.Helper()
	args := append(ts.sshOpts(t, key), "-b", "-", "-P", ts.port, tenant+"@127.0.0.1")
	return runTool(t, batch, "sftp", args...)
}

// waitFor polls cond (bounded) and reports whether it became true.
func waitFor(cond func() bool) bool {
	for range 250 {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
