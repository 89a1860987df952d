package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/fetch/store/sshdtest"
)

// dialTest connects to srv with its key and known_hosts; mod adjusts the
// configuration first.
func dialTest(t testing.TB, srv *sshdtest.Server, mod func(*SFTPConfig)) *SFTP {
	t.Helper()
	s, err := DialSFTP(context.Background(), testConfig(srv, mod))
	if err != nil {
		t.Fatalf("DialSFTP: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testConfig(srv *sshdtest.Server, mod func(*SFTPConfig)) SFTPConfig {
	cfg := SFTPConfig{
		Addr:           srv.Addr,
		User:           srv.User,
		KeyFile:        srv.KeyFile,
		KnownHostsFile: srv.KnownHostsFile,
		Timeout:        10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// The conformance suite against OpenSSH, the store at the login folder
// (Root "") and known_hosts.
func TestSFTP(t *testing.T) {
	t.Parallel()
	testStore(t, func(t *testing.T) (pipeline.Store, string) {
		srv := sshdtest.Start(t)
		return dialTest(t, srv, nil), srv.Root
	})
}

// The suite again: a tenant below an absolute root, a pinned fingerprint,
// and renames without posix-rename@openssh.com (remove, then rename).
func TestSFTPTenantNoPosixRename(t *testing.T) {
	t.Parallel()
	testStore(t, func(t *testing.T) (pipeline.Store, string) {
		srv := sshdtest.Start(t)
		home := filepath.Join(srv.Root, "tenants", "acme")
		for _, d := range sshdtest.Folders {
			must(t, os.MkdirAll(filepath.Join(home, d), 0o755))
		}
		s := dialTest(t, srv, func(c *SFTPConfig) {
			c.KnownHostsFile, c.HostKeyFingerprint = "", srv.HostKeyFingerprint
		})
		s.noPosixRename = true
		return s.Tenant(path.Join(srv.RemoteRoot, "tenants", "acme")), home
	})
}

func TestSFTPHostKey(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	ctx := context.Background()
	otherKey := func() ssh.PublicKey {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		must(t, err)
		k, err := ssh.NewPublicKey(pub)
		must(t, err)
		return k
	}
	writeKnownHosts := func(addr string) string {
		f := filepath.Join(t.TempDir(), "known_hosts")
		must(t, os.WriteFile(f, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, otherKey())+"\n"), 0o600))
		return f
	}
	cases := []struct {
		name    string
		mod     func(*SFTPConfig)
		hostKey bool   // ErrHostKey expected
		want    string // in the error
	}{
		{"none", func(c *SFTPConfig) { c.KnownHostsFile = "" }, false, "host key verification is required"},
		{"fingerprint format", func(c *SFTPConfig) {
			c.KnownHostsFile, c.HostKeyFingerprint = "", "MD5:12:34"
		}, false, "SHA256:"},
		{"wrong fingerprint", func(c *SFTPConfig) {
			c.KnownHostsFile, c.HostKeyFingerprint = "", ssh.FingerprintSHA256(otherKey())
		}, true, "not the pinned fingerprint"},
		{"right known_hosts, wrong fingerprint", func(c *SFTPConfig) {
			c.HostKeyFingerprint = ssh.FingerprintSHA256(otherKey())
		}, true, "not the pinned fingerprint"},
		{"known_hosts mismatch", func(c *SFTPConfig) {
			c.KnownHostsFile = writeKnownHosts(srv.Addr)
		}, true, "does not match known_hosts"},
		{"host not in known_hosts", func(c *SFTPConfig) {
			c.KnownHostsFile = writeKnownHosts("127.0.0.1:1")
		}, true, "is not in known_hosts"},
		{"missing known_hosts", func(c *SFTPConfig) {
			c.KnownHostsFile = filepath.Join(t.TempDir(), "nope")
		}, false, "known_hosts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := DialSFTP(ctx, testConfig(srv, tc.mod))
			if err == nil {
				s.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrHostKey) != tc.hostKey {
				t.Fatalf("error %q: want %q, ErrHostKey %v", err, tc.want, tc.hostKey)
			}
			if IsTransient(err) {
				t.Fatalf("IsTransient(%v) = true", err)
			}
			t.Log(err)
		})
	}
	t.Run("right fingerprint", func(t *testing.T) {
		s := dialTest(t, srv, func(c *SFTPConfig) {
			c.KnownHostsFile, c.HostKeyFingerprint = "", srv.HostKeyFingerprint+"=" // padding tolerated
		})
		_, err := s.List(ctx)
		must(t, err)
	})
	t.Run("both", func(t *testing.T) {
		s := dialTest(t, srv, func(c *SFTPConfig) { c.HostKeyFingerprint = srv.HostKeyFingerprint })
		_, err := s.List(ctx)
		must(t, err)
	})
}

func TestSFTPAuth(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", keyFile).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	must(t, err)
	srv.AuthorizeKey(t, string(pub))

	s := dialTest(t, srv, func(c *SFTPConfig) { c.KeyFile, c.KeyPassphrase = keyFile, "s3cret" })
	_, err = s.List(ctx)
	must(t, err)

	// A key the server does not know.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	must(t, err)
	stranger := filepath.Join(dir, "stranger")
	must(t, os.WriteFile(stranger, pem.EncodeToMemory(block), 0o600))

	for _, tc := range []struct {
		name, key, passphrase, want string
	}{
		{"no passphrase", keyFile, "", "is encrypted"},
		{"wrong passphrase", keyFile, "nope", "wrong passphrase"},
		{"unknown key", stranger, "", "unable to authenticate"},
		{"no credentials", "", "", "set KeyFile or Password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := DialSFTP(ctx, testConfig(srv, func(c *SFTPConfig) { c.KeyFile, c.KeyPassphrase = tc.key, tc.passphrase }))
			if err == nil {
				s.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) || IsTransient(err) {
				t.Fatalf("error %q (transient %v), want %q", err, IsTransient(err), tc.want)
			}
		})
	}
}

// appendTo simulates an upload in progress: the file grows on disk.
func appendTo(t testing.TB, file, s string) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	must(t, err)
	_, err = f.WriteString(s)
	must(t, err)
	must(t, f.Close())
}

func listNames(t testing.TB, s pipeline.Store) []string {
	t.Helper()
	files, err := s.List(context.Background())
	must(t, err)
	return names(files)
}

func TestSFTPUploadInProgress(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	s := dialTest(t, srv, nil)
	in := func(name string) string { return filepath.Join(srv.Root, "incoming", name) }
	old := time.Now().Add(-time.Hour).Truncate(time.Second)

	appendTo(t, in("half.csv"), "id,name\n")
	if got := listNames(t, s); len(got) != 0 {
		t.Fatalf("first poll = %v: a file seen once is not complete", got)
	}
	appendTo(t, in("half.csv"), "1,Ada\n")
	if got := listNames(t, s); len(got) != 0 {
		t.Fatalf("poll after growth = %v: the size changed", got)
	}
	if got := listNames(t, s); !slices.Equal(got, []string{"half.csv"}) {
		t.Fatalf("poll once unchanged = %v, want [half.csv]", got)
	}
	// Changed again (a re-upload): pending until unchanged again.
	appendTo(t, in("half.csv"), "2,Grace\n")
	if got := listNames(t, s); len(got) != 0 {
		t.Fatalf("poll after another change = %v", got)
	}
	if got := listNames(t, s); !slices.Equal(got, []string{"half.csv"}) {
		t.Fatalf("poll once unchanged = %v", got)
	}

	// A marker makes a file complete at its first poll.
	put(t, srv.Root, "incoming/m.csv", "m", old)
	put(t, srv.Root, "incoming/m.csv.done", "", old)
	put(t, srv.Root, "incoming/e.csv.pgp", "pgp", old.Add(time.Second))
	put(t, srv.Root, "incoming/e.csv.done.pgp", "", old.Add(time.Second))
	appendTo(t, in("late.csv"), "x")
	if got := listNames(t, s); !slices.Equal(got, []string{"m.csv", "e.csv.pgp", "half.csv"}) {
		t.Fatalf("poll with markers = %v", got)
	}
	// The marker arrives after the file was first seen.
	appendTo(t, in("late.csv"), "y")
	put(t, srv.Root, "incoming/late.csv.done", "", time.Now())
	if got := listNames(t, s); !slices.Contains(got, "late.csv") {
		t.Fatalf("poll after the marker = %v, want late.csv", got)
	}
}

func TestSFTPStableAfter(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	const d = 300 * time.Millisecond
	s := dialTest(t, srv, func(c *SFTPConfig) { c.StableAfter = d })
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	put(t, srv.Root, "incoming/stable.csv", "done uploading", old)

	// One List, as a one-shot roster run makes, while another file grows.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			appendTo(t, filepath.Join(srv.Root, "incoming", "growing.csv"), "row\n")
		}
	}()
	start := time.Now()
	got := listNames(t, s)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if !slices.Equal(got, []string{"stable.csv"}) {
		t.Fatalf("List = %v, want [stable.csv]", got)
	}
	if elapsed < d || elapsed > d+5*time.Second {
		t.Fatalf("List took %v, want about %v (one wait)", elapsed, d)
	}

	// Once growing.csv stops changing, one List takes it.
	if got := listNames(t, s); !slices.Equal(got, []string{"stable.csv", "growing.csv"}) {
		t.Fatalf("List = %v, want [stable.csv growing.csv]", got)
	}
	// Nothing pending: no wait.
	start = time.Now()
	listNames(t, s)
	if elapsed := time.Since(start); elapsed >= d {
		t.Fatalf("List with nothing pending took %v", elapsed)
	}
}

// The two-poll memory outlives a connection when the caller keeps it.
func TestSFTPPollStateShared(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	put(t, srv.Root, "incoming/a.csv", "a", time.Now().Add(-time.Minute))
	ps := NewPollState()
	s1 := dialTest(t, srv, func(c *SFTPConfig) { c.PollState = ps })
	if got := listNames(t, s1); len(got) != 0 {
		t.Fatalf("first poll = %v", got)
	}
	s1.Close()
	s2 := dialTest(t, srv, func(c *SFTPConfig) { c.PollState = ps })
	if got := listNames(t, s2); !slices.Equal(got, []string{"a.csv"}) {
		t.Fatalf("second poll, new connection, same state = %v", got)
	}
	s3 := dialTest(t, srv, nil)
	if got := listNames(t, s3); len(got) != 0 {
		t.Fatalf("first poll of a fresh state = %v", got)
	}
	// Tenants on one server do not share entries.
	must(t, os.MkdirAll(filepath.Join(srv.Root, "t2", "incoming"), 0o755))
	put(t, srv.Root, "t2/incoming/a.csv", "a", time.Now().Add(-time.Minute))
	if got := listNames(t, s2.Tenant("t2")); len(got) != 0 {
		t.Fatalf("first poll of another tenant = %v", got)
	}
}

// hookWriter calls hook once, at its first write.
type hookWriter struct {
	once sync.Once
	hook func()
	n    int64
}

func (h *hookWriter) Write(p []byte) (int, error) {
	h.once.Do(h.hook)
	h.n += int64(len(p))
	return len(p), nil
}

func bigUpload(t testing.TB, srv *sshdtest.Server) []byte {
	t.Helper()
	big := make([]byte, 32<<20)
	rand.Read(big)
	put(t, srv.Root, "incoming/big.csv", string(big), time.Now().Add(-time.Minute))
	return big
}

func checkStillIncoming(t testing.TB, srv *sshdtest.Server, size int) {
	t.Helper()
	st, err := os.Stat(filepath.Join(srv.Root, "incoming", "big.csv"))
	if err != nil || st.Size() != int64(size) {
		t.Fatalf("incoming/big.csv after the failure: %v, %v", st, err)
	}
}

func TestSFTPServerDiesMidDownload(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	big := bigUpload(t, srv)
	s := dialTest(t, srv, nil)
	ctx := context.Background()
	killed := 0
	w := &hookWriter{hook: func() { killed = srv.KillSessions() }}
	n, err := s.Fetch(ctx, "big.csv", w)
	if killed == 0 {
		t.Fatal("no session to kill")
	}
	if err == nil || n >= int64(len(big)) {
		t.Fatalf("Fetch with the server killed = %d bytes, %v; want an error", n, err)
	}
	if !errors.Is(err, ErrConnection) || !IsTransient(err) {
		t.Fatalf("error %v: want ErrConnection, transient", err)
	}
	t.Log(err)
	checkStillIncoming(t, srv, len(big))

	// The next call reconnects.
	var buf bytes.Buffer
	n, err = s.Fetch(ctx, "big.csv", &buf)
	must(t, err)
	if n != int64(len(big)) || !bytes.Equal(buf.Bytes(), big) {
		t.Fatalf("Fetch after reconnecting: %d bytes", n)
	}
}

func TestSFTPClientClosedMidDownload(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	big := bigUpload(t, srv)
	s := dialTest(t, srv, nil)
	closed := make(chan struct{})
	w := &hookWriter{hook: func() {
		go func() {
			s.Close()
			close(closed)
		}()
	}}
	n, err := s.Fetch(context.Background(), "big.csv", w)
	<-closed
	if err == nil || n >= int64(len(big)) {
		t.Fatalf("Fetch with the client closed = %d bytes, %v; want an error", n, err)
	}
	checkStillIncoming(t, srv, len(big))
	if _, err := s.List(context.Background()); !errors.Is(err, errClosed) {
		t.Fatalf("List after Close: %v", err)
	}
}

func TestSFTPCancelMidDownload(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	big := bigUpload(t, srv)
	s := dialTest(t, srv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := s.Fetch(ctx, "big.csv", &hookWriter{hook: cancel})
	if !errors.Is(err, context.Canceled) || n >= int64(len(big)) {
		t.Fatalf("Fetch cancelled = %d bytes, %v", n, err)
	}
	checkStillIncoming(t, srv, len(big))
	// The connection is still good.
	n, err = s.Fetch(context.Background(), "big.csv", io.Discard)
	if err != nil || n != int64(len(big)) {
		t.Fatalf("Fetch after a cancelled one = %d, %v", n, err)
	}
}

func TestSFTPRetryReconnects(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t)
	put(t, srv.Root, "incoming/a.csv", "a", time.Now().Add(-time.Minute))
	put(t, srv.Root, "incoming/a.csv.done", "", time.Now().Add(-time.Minute))
	s := dialTest(t, srv, nil)
	r := Retry(s, 3, 20*time.Millisecond)
	if srv.KillSessions() == 0 {
		t.Fatal("no session to kill")
	}
	if got := listNames(t, r); !slices.Equal(got, []string{"a.csv"}) {
		t.Fatalf("List through Retry after the server dropped us = %v", got)
	}
	srv.KillSessions()
	var buf bytes.Buffer
	if _, err := r.Fetch(context.Background(), "a.csv", &buf); err != nil || buf.String() != "a" {
		t.Fatalf("Fetch through Retry = %q, %v", buf.String(), err)
	}
	if _, err := r.Fetch(context.Background(), "missing.csv", &buf); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Fetch missing through Retry: %v", err)
	}
}
