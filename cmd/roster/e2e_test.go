package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/fixtures"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/stages/fetch/store/sshdtest"
	"github.com/roster-hr/roster/stages/report/email/smtptest"
	"golang.org/x/crypto/ssh"
)

// syncBuf is a bytes.Buffer safe for a command writing while a test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type cli struct {
	t       *testing.T
	db      *sqlx.DB
	url     string
	dataDir string
}

func newCLI(t *testing.T) *cli {
	db, url := pgtest.New(t)
	return &cli{t: t, db: db, url: url, dataDir: t.TempDir()}
}

// roster runs the command line in-process and returns its exit status,
// stdout and stderr.
func (c *cli) roster(ctx context.Context, args ...string) (int, string, string) {
	var out, errb syncBuf
	code := run(ctx, append([]string{"--db", c.url, "--data-dir", c.dataDir}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func (c *cli) must(args ...string) string {
	c.t.Helper()
	code, out, errs := c.roster(context.Background(), args...)
	if code != 0 {
		c.t.Fatalf("roster %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func need(t *testing.T, bins ...string) {
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (.ci/run installs it)", b)
			}
			t.Skipf("%s is not installed", b)
		}
	}
}

func sh(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// gpgHome is a throwaway GnuPG home with the tenant's public key imported,
// as a customer's machine would have.
func gpgHome(t *testing.T, publicKey string) string {
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() //nolint:errcheck
		os.RemoveAll(home)
	})
	os.Chmod(home, 0o700) //nolint:errcheck
	sh(t, publicKey, "gpg", "--homedir", home, "--batch", "--import")
	return home
}

func (c *cli) count(q string, args ...any) int {
	var n int
	if err := c.db.Get(&n, q, args...); err != nil {
		c.t.Fatal(err)
	}
	return n
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitFor polls cond for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

// TestServeTakesGnuPGFileUploadedWithOpenSSH is the customer's path: a file
// encrypted with real gpg to the key `roster keys generate` printed,
// uploaded with the OpenSSH sftp client to `roster serve`, applied within
// two poll intervals; the same file with one byte flipped is decrypt_failed,
// changes nothing, lands in /failed with a report readable over SFTP.
func TestServeTakesGnuPGFileUploadedWithOpenSSH(t *testing.T) {
	need(t, "sftp", "ssh-keygen", "gpg")
	c := newCLI(t)
	t.Setenv("ROSTER_KEY_PASSPHRASE", "test-only-passphrase")
	keyDir := t.TempDir()
	sh(t, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-only customer key", "-f", filepath.Join(keyDir, "id"))
	c.must("tenant", "add", "acme", "--sftp-public-key", filepath.Join(keyDir, "id.pub"))
	pub := c.must("keys", "generate", "acme")
	if !strings.Contains(pub, "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("keys generate printed %q", pub)
	}
	home := gpgHome(t, pub)
	var plain bytes.Buffer
	fixtures.WriteUsers(&plain, fixtures.UserOptions{Rows: 50, Seed: 3}) //nolint:errcheck
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "users.csv"), plain.Bytes(), 0o644) //nolint:errcheck
	keyID := strings.TrimSpace(c.must("tenant", "list", "--json"))
	var tenants []struct {
		PGPKeyID string `json:"pgp_key_id"`
	}
	json.Unmarshal([]byte(keyID), &tenants) //nolint:errcheck
	sh(t, "", "gpg", "--homedir", home, "--batch", "--trust-model", "always", "--encrypt", "--recipient", tenants[0].PGPKeyID,
		"--output", filepath.Join(work, "users.csv.gpg"), filepath.Join(work, "users.csv"))
	enc, _ := os.ReadFile(filepath.Join(work, "users.csv.gpg"))
	bad := append([]byte(nil), enc...)
	bad[len(bad)/2] ^= 0x01
	os.WriteFile(filepath.Join(work, "tampered.csv.gpg"), bad, 0o644) //nolint:errcheck

	addr, httpAddr := freeAddr(t), freeAddr(t)
	mail := smtptest.Start(t)
	c.must("tenant", "add", "acme", "--contact", "it@acme.example")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int)
	var out, errs syncBuf
	go func() {
		done <- run(ctx, []string{"--db", c.url, "--data-dir", c.dataDir, "serve", "--sftp-listen", addr, "--poll-interval", "2s",
			"--http-listen", httpAddr, "--smtp-addr", mail.Addr, "--smtp-from", "roster@test.example"}, &out, &errs)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	waitFor(t, 10*time.Second, "serve to print its host key", func() bool { return strings.Contains(out.String(), "host key SHA256:") })
	hostKey, err := os.ReadFile(filepath.Join(c.dataDir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), ssh.FingerprintSHA256(signer.PublicKey())) {
		t.Fatalf("serve printed %q, not the key's fingerprint", out.String())
	}
	host, port, _ := net.SplitHostPort(addr)
	known := filepath.Join(work, "known_hosts")
	os.WriteFile(known, []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(signer.PublicKey()))), 0o600) //nolint:errcheck
	sftpBatch := func(batch string) string {
		return sh(t, batch, "sftp", "-b", "-", "-i", filepath.Join(keyDir, "id"), "-P", port,
			"-o", "UserKnownHostsFile="+known, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "acme@"+host)
	}

	started := time.Now()
	sftpBatch("put " + filepath.Join(work, "users.csv.gpg") + " /incoming/users.csv.gpg\n")
	waitFor(t, 2*2*time.Second+10*time.Second, "the upload to be applied", func() bool {
		return c.count(`SELECT count(*) FROM users WHERE tenant_id = 'acme'`) == 50
	})
	t.Logf("applied %s after the upload", time.Since(started).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the upload to move to /processed", func() bool {
		_, err := os.Stat(filepath.Join(c.dataDir, "sftp", "acme", "processed", "users.csv.gpg"))
		return err == nil
	})

	sftpBatch("put " + filepath.Join(work, "tampered.csv.gpg") + " /incoming/tampered.csv.gpg\n")
	waitFor(t, 15*time.Second, "the tampered file to be rejected", func() bool {
		return c.count(`SELECT count(*) FROM run_files WHERE name = 'tampered.csv.gpg' AND status = 'rejected' AND error_code = 'decrypt_failed'`) == 1
	})
	if n := c.count(`SELECT count(*) FROM users`); n != 50 {
		t.Fatalf("%d users after the tampered file, want 50", n)
	}
	waitFor(t, 10*time.Second, "the report", func() bool {
		_, err := os.Stat(filepath.Join(c.dataDir, "sftp", "acme", "reports", "tampered.csv.gpg.report.csv"))
		return err == nil
	})
	got := sftpBatch("get /reports/tampered.csv.gpg.report.csv " + filepath.Join(work, "report.csv") + "\nls /failed\n")
	if !strings.Contains(got, "tampered.csv.gpg") {
		t.Fatalf("the tampered file is not in /failed:\n%s", got)
	}
	rep, _ := os.ReadFile(filepath.Join(work, "report.csv"))
	if !strings.Contains(string(rep), "decrypt_failed") || !strings.Contains(string(rep), tenants[0].PGPKeyID) {
		t.Fatalf("report does not say decrypt_failed with the expected key id:\n%s", rep)
	}
	// The technical contact hears of it.
	msgs := mail.Messages(t, 1)
	if to := msgs[0].RcptTos; len(to) != 1 || to[0] != "it@acme.example" {
		t.Fatalf("e-mail to %v", to)
	}
	subj, _ := new(mime.WordDecoder).DecodeHeader(msgs[0].Msg.Header.Get("Subject"))
	if !strings.Contains(subj, "tampered.csv.gpg") || !strings.Contains(subj, "decrypt_failed") {
		t.Fatalf("e-mail subject %q", subj)
	}
	// The operator sees it in /metrics, read from the ledger (the nightly
	// sweep run at start-up may add a succeeded run at any moment, so the
	// count is compared with the ledger around the scrape).
	waitFor(t, 30*time.Second, "the runs to finish (their export runs after the files)", func() bool {
		return c.count(`SELECT count(*) FROM runs WHERE status = 'running'`) == 0
	})
	var metrics string
	for try := 0; try < 20; try++ {
		before := c.count(`SELECT count(*) FROM runs WHERE status = 'succeeded'`)
		metrics = httpGet(t, "http://"+httpAddr+"/metrics")
		if c.count(`SELECT count(*) FROM runs WHERE status = 'succeeded'`) == before {
			want := fmt.Sprintf(`roster_runs_total{status="succeeded",tenant="acme"} %d`, before)
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s; it has:\n%s", want, grepLines(metrics, "roster_runs_total"))
			}
			break
		}
	}
	for _, want := range []string{`roster_runs_total{status="failed",tenant="acme"} 1`, `roster_files_total{status="applied",tenant="acme"} 1`, "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s; it has:\n%s", want, grepLines(metrics, "roster_"))
		}
	}
	if page := httpGet(t, "http://"+httpAddr+"/"); !strings.Contains(page, "acme") {
		t.Error("the status page does not show the tenant")
	}
	if h := httpGet(t, "http://"+httpAddr+"/healthz"); !strings.Contains(h, "ok") {
		t.Errorf("/healthz: %s", h)
	}
	if strings.Contains(errs.String(), "test-only-passphrase") || strings.Contains(out.String(), "test-only-passphrase") {
		t.Fatal("the key passphrase appears in the output")
	}
}

// TestRunPullsFromOpenSSHServer pulls from an external store (OpenSSH sshd
// with internal-sftp), taking only files marked complete, and moves them.
func TestRunPullsFromOpenSSHServer(t *testing.T) {
	srv := sshdtest.Start(t)
	c := newCLI(t)
	c.must("tenant", "add", "acme")
	var users bytes.Buffer
	fixtures.WriteUsers(&users, fixtures.UserOptions{Rows: 20, Seed: 5}) //nolint:errcheck
	in := filepath.Join(srv.Root, "incoming")
	os.WriteFile(filepath.Join(in, "users.csv"), users.Bytes(), 0o644)      //nolint:errcheck
	os.WriteFile(filepath.Join(in, "users.csv.done"), nil, 0o644)           //nolint:errcheck
	os.WriteFile(filepath.Join(in, "half.csv"), []byte("email,fir"), 0o644) //nolint:errcheck
	store := "sftp://" + srv.User + "@" + srv.Addr + srv.RemoteRoot
	code, out, errs := c.roster(context.Background(), "run", "--tenant", "acme", "--store", store, "--store-key", srv.KeyFile,
		"--known-hosts", srv.KnownHostsFile, "--stable-after", "0s", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	var res runJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 1 || res.Files[0].Name != "users.csv" || res.Files[0].Created != 20 {
		t.Fatalf("files %+v, want users.csv with 20 created (half.csv is not complete)", res.Files)
	}
	for _, p := range []string{"processed/users.csv", "processed/users.csv.done", "incoming/half.csv"} {
		if _, err := os.Stat(filepath.Join(srv.Root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// Without verification roster refuses to connect.
	code, _, errs = c.roster(context.Background(), "run", "--tenant", "acme", "--store", store, "--store-key", srv.KeyFile)
	if code != 2 || !strings.Contains(errs, "--known-hosts") {
		t.Fatalf("unverified store: exit %d %s", code, errs)
	}
}
