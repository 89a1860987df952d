package sftpd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// TestOnlySFTP: every session request and channel other than the sftp
// subsystem is refused (the OpenSSH tests cover ssh and scp -O).
func TestOnlySFTP(t *testing.T) {
	ts := startServer(t, newMapAuth())
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	c, err := ts.dialFrom("", "acme", ssh.PublicKeys(k))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var stderr bytes.Buffer
	cases := []struct {
		name string
		run  func() error
		// wantMsg is expected in stderr for exec/shell.
		wantMsg bool
	}{
		{"exec", func() error {
			return runSession(c, &stderr, func(s *ssh.Session) error { return s.Run("cat /etc/passwd") })
		}, true},
		{"legacy scp sink", func() error {
			return runSession(c, &stderr, func(s *ssh.Session) error { return s.Run("scp -t /incoming") })
		}, true},
		{"shell", func() error {
			return runSession(c, &stderr, func(s *ssh.Session) error {
				if err := s.Shell(); err != nil {
					return err
				}
				return s.Wait()
			})
		}, true},
		{"pty", func() error {
			return runSession(c, &stderr, func(s *ssh.Session) error { return s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}) })
		}, false},
		{"other subsystem", func() error {
			return runSession(c, &stderr, func(s *ssh.Session) error { return s.RequestSubsystem("netconf") })
		}, false},
		{"direct-tcpip", func() error {
			conn, err := c.Dial("tcp", ts.addr)
			if err == nil {
				conn.Close()
				return nil
			}
			var oe *ssh.OpenChannelError
			if !errors.As(err, &oe) || oe.Reason != ssh.Prohibited {
				t.Errorf("direct-tcpip refused with %v, want Prohibited", err)
			}
			return err
		}, false},
		{"remote forwarding", func() error {
			ln, err := c.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				ln.Close()
			}
			return err
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stderr.Reset()
			err := tc.run()
			if err == nil {
				t.Fatal("not refused")
			}
			if tc.wantMsg {
				var ee *ssh.ExitError
				if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
					t.Errorf("error %v, want exit status 1", err)
				}
				if !strings.Contains(stderr.String(), "only speaks SFTP") {
					t.Errorf("stderr %q lacks the explanation", stderr.String())
				}
			}
		})
	}
	// The connection is still good for SFTP.
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.ReadDir("/incoming"); err != nil {
		t.Fatal(err)
	}
}

// runSession runs f on a new session, collecting its stderr into buf.
func runSession(c *ssh.Client, buf *bytes.Buffer, f func(*ssh.Session) error) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	s.Stderr = buf
	return f(s)
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, newMapAuth(), WithIdleTimeout(300*time.Millisecond))
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	c, err := ts.dialFrom("", "acme", ssh.PublicKeys(k))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

// TestIdleTimeoutActiveTransfer: a connection that keeps transferring is
// not idle, however long it lasts.
func TestIdleTimeoutActiveTransfer(t *testing.T) {
	ts := startServer(t, newMapAuth(), WithIdleTimeout(300*time.Millisecond))
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	_, c := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	f, err := c.Create("/incoming/slow.csv")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // 10 × 100ms: over three idle timeouts in all
		if _, err := f.Write([]byte("row\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConnLimits(t *testing.T) {
	t.Run("per tenant", func(t *testing.T) {
		ts := startServer(t, newMapAuth(), WithMaxConnsPerTenant(1))
		k := goKey(t)
		ts.auth.addKey("acme", k.PublicKey())
		ts.auth.addKey("globex", k.PublicKey())
		first, _ := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
		second, err := ts.dialFrom("", "acme", ssh.PublicKeys(k))
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		_, err = second.NewSession()
		var oe *ssh.OpenChannelError
		if !errors.As(err, &oe) || oe.Reason != ssh.ResourceShortage || !strings.Contains(oe.Message, "too many connections") {
			t.Fatalf("second session: %v, want refused for too many connections", err)
		}
		// Another tenant is not affected.
		ts.sftpClient(t, "globex", ssh.PublicKeys(k))
		// Once the first leaves, a new connection gets in.
		first.Close()
		ok := waitFor(func() bool {
			c, err := ts.dialFrom("", "acme", ssh.PublicKeys(k))
			if err != nil {
				return false
			}
			defer c.Close()
			s, err := c.NewSession()
			if err == nil {
				s.Close()
			}
			return err == nil
		})
		if !ok {
			t.Fatal("slot not released")
		}
	})
	t.Run("per address", func(t *testing.T) {
		ts := startServer(t, newMapAuth(), WithMaxConnsPerAddr(1))
		k := goKey(t)
		ts.auth.addKey("acme", k.PublicKey())
		// A raw TCP connection that never speaks holds the slot.
		raw, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		// Make sure the server has accepted it before the next dial.
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); err != nil {
			t.Fatalf("no server banner: %v", err)
		}
		if c, err := ts.dialFrom("", "acme", ssh.PublicKeys(k)); err == nil {
			c.Close()
			t.Fatal("second connection from the address accepted")
		}
	})
}

// TestShutdown: cancelling Serve's context closes client connections and
// discards uploads in progress.
func TestShutdown(t *testing.T) {
	dir := t.TempDir()
	auth := newMapAuth()
	k := goKey(t)
	auth.addKey("acme", k.PublicKey())
	srv, err := New(filepath.Join(dir, "sftp"), auth, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	ts := &testServer{srv: srv, addr: ln.Addr().String()}
	c, err := ts.dialFrom("", "acme", ssh.PublicKeys(k))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	f, err := sc.Create("/incoming/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	// Serve waited for its connections: the upload is already discarded.
	home := filepath.Join(dir, "sftp", "acme")
	if got := dirNames(t, filepath.Join(home, "incoming")); len(got) != 0 {
		t.Errorf("incoming/ holds %v", got)
	}
	if got := dirNames(t, filepath.Join(home, partialDir)); len(got) != 0 {
		t.Errorf("partial files left: %v", got)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("listener still open")
	}
}

func TestHostKey(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "sftp")
	keyFile := filepath.Join(dir, "ssh_host_ed25519_key") // the default
	mode := func() os.FileMode {
		t.Helper()
		fi, err := os.Stat(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	s1, err := New(root, newMapAuth(), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o600 {
		t.Fatalf("new key mode %v", m)
	}
	if s1.signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("key type %s", s1.signer.PublicKey().Type())
	}
	if fp := s1.HostKeyFingerprint(); !strings.HasPrefix(fp, "SHA256:") {
		t.Fatalf("fingerprint %q", fp)
	}
	s2, err := New(root, newMapAuth(), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s1.HostKeyFingerprint() != s2.HostKeyFingerprint() {
		t.Fatal("host key changed across restarts")
	}
	// A world-readable key is repaired, with a warning, and kept.
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	s3, err := New(root, newMapAuth(), WithLogger(newTextLogger(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o600 {
		t.Errorf("mode after repair %v", m)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning logged: %s", logs.String())
	}
	if s3.HostKeyFingerprint() != s1.HostKeyFingerprint() {
		t.Error("repaired key replaced")
	}
	// An explicit path.
	other := filepath.Join(dir, "keys", "host")
	s4, err := New(root, newMapAuth(), WithLogger(nil), WithHostKeyFile(other))
	if err != nil {
		t.Fatal(err)
	}
	if s4.HostKeyFingerprint() == s1.HostKeyFingerprint() {
		t.Error("WithHostKeyFile ignored")
	}
	// Garbage in the key file is an error, not a silent new key.
	if err := os.WriteFile(other, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root, newMapAuth(), WithLogger(nil), WithHostKeyFile(other)); err == nil {
		t.Error("garbage host key accepted")
	}
}

func TestNewOptions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "sftp")
	bad := []Option{
		WithMaxUploadSize(0), WithIdleTimeout(-1), WithMaxConnsPerTenant(0),
		WithMaxConnsPerAddr(-3), WithHostKeyFile(""),
	}
	for i, o := range bad {
		if _, err := New(root, newMapAuth(), o); err == nil {
			t.Errorf("bad option %d accepted", i)
		}
	}
	if _, err := New(root, nil); err == nil {
		t.Error("nil Authenticator accepted")
	}
}

func TestEnsureHome(t *testing.T) {
	dir := t.TempDir()
	s, err := New(filepath.Join(dir, "sftp"), newMapAuth(), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	invalid := []string{
		"", ".", "..", "../x", "a/b", "/abs", "a\x00b", ".hidden", "-flag", "a b",
		"a\nb", "a\\b", "ünï", strings.Repeat("a", 129),
	}
	for _, id := range invalid {
		if err := s.EnsureHome(id); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("EnsureHome(%q) = %v, want ErrInvalidTenant", id, err)
		}
	}
	for _, id := range []string{"acme", "Acme-2", "t_1.eu", strings.Repeat("a", 128)} {
		if err := s.EnsureHome(id); err != nil {
			t.Fatalf("EnsureHome(%q): %v", id, err)
		}
		if err := s.EnsureHome(id); err != nil { // idempotent
			t.Fatalf("EnsureHome(%q) again: %v", id, err)
		}
		for _, d := range homeDirs {
			fi, err := os.Lstat(filepath.Join(dir, "sftp", id, d))
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
				t.Errorf("%s/%s: %v, %v", id, d, fi, err)
			}
		}
	}
	// A home that is a symlink is refused, not followed.
	if err := os.Symlink(dir, filepath.Join(dir, "sftp", "evil")); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureHome("evil"); err == nil {
		t.Error("symlinked home accepted")
	}
	// Stale partial uploads are swept, fresh ones kept.
	partials := filepath.Join(dir, "sftp", "acme", partialDir)
	for _, name := range []string{"old.part", "new.part"} {
		if err := os.WriteFile(filepath.Join(partials, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * stalePartial)
	if err := os.Chtimes(filepath.Join(partials, "old.part"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureHome("acme"); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, partials); len(got) != 1 || got[0] != "new.part" {
		t.Errorf("partials after sweep: %v", got)
	}
}
