package main

// Secrets (issue #8): no password, passphrase or private key reaches the
// logs, the terminal, the ledger's messages, the status page, reports or
// e-mails, even at debug level.

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/roster-hr/roster/stages/report/email/smtptest"
)

// withStdin runs f with os.Stdin reading s (tenant add --sftp-password-stdin).
func withStdin(t *testing.T, s string, f func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, s) //nolint:errcheck
	w.Close()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	f()
}

// TestSecretsStayOutOfLogs runs roster serve with JSON logs at debug level
// and drives it as customers and operators would: wrong and right SFTP
// passwords, a PGP-encrypted upload the stored key (unlocked with
// ROSTER_KEY_PASSPHRASE) decrypts, a tampered one, report e-mails through an
// SMTP server that requires a password, the status page and the ledger. No
// secret may appear in anything roster printed, logged, mailed or wrote.
func TestSecretsStayOutOfLogs(t *testing.T) {
	c := newCLI(t)
	const (
		sftpPassword  = "sftp-Secret-4b1d9e2a"
		wrongPassword = "wrong-Guess-77c0aa13"
		passphrase    = "pgp-Passphrase-91f3c2e8"
		smtpPassword  = "smtp-Secret-d04e6f5b"
		dbPassword    = "db-Secret-a2c4e6f8" // the test cluster trusts local connections and ignores it
	)
	u, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dbPassword)
	c.url = u.String()
	t.Setenv("ROSTER_KEY_PASSPHRASE", passphrase)
	t.Setenv("ROSTER_SMTP_PASSWORD", smtpPassword)
	logArgs := []string{"--log-format", "json", "--log-level", "debug"}

	var all syncBuf // everything to search
	cmd := func(args ...string) string {
		t.Helper()
		code, out, errs := c.roster(context.Background(), append(logArgs, args...)...)
		all.Write([]byte(out + errs))
		if code != 0 {
			t.Fatalf("roster %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	withStdin(t, sftpPassword+"\n", func() { cmd("tenant", "add", "acme", "--sftp-password-stdin", "--contact", "it@acme.example") })
	pub := cmd("keys", "generate", "acme")

	mail := smtptest.Start(t, "SMTP_USER=roster", "SMTP_PASS="+smtpPassword)
	addr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errs syncBuf
	go func() {
		done <- run(ctx, append(append([]string{"--db", c.url, "--data-dir", c.dataDir}, logArgs...), "serve", "--sftp-listen", addr,
			"--poll-interval", "1s", "--http-listen", httpAddr, "--smtp-addr", mail.Addr, "--smtp-from", "roster@test.example",
			"--smtp-user", "roster"), &out, &errs)
	}()
	stopped := false
	stopServe := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stopServe)
	waitFor(t, 10*time.Second, "serve to print its host key", func() bool { return strings.Contains(out.String(), "host key SHA256:") })

	dial := func(pw string) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "acme", Auth: []ssh.AuthMethod{ssh.Password(pw)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}) //nolint:gosec // loopback test server
	}
	for range 3 {
		if cl, err := dial(wrongPassword); err == nil {
			cl.Close()
			t.Fatal("a wrong password was accepted")
		}
	}
	cl, err := dial(sftpPassword)
	if err != nil {
		t.Fatalf("the right password: %v", err)
	}
	defer cl.Close()
	sc, err := sftp.NewClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	// A file encrypted to the tenant's key, with one bad row (a report and
	// an e-mail), and the same file tampered with (decrypt_failed).
	keys, err := openpgp.ReadArmoredKeyRing(strings.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	w, err := openpgp.Encrypt(&enc, keys, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "email,first_name,last_name\nada@example.com,Ada,Lovelace\nnot-an-email,Bad,Row\n") //nolint:errcheck
	w.Close()
	tampered := append([]byte(nil), enc.Bytes()...)
	tampered[len(tampered)/2] ^= 1
	upload := func(name string, b []byte) {
		f, err := sc.Create("/incoming/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	upload("users.csv.pgp", enc.Bytes())
	waitFor(t, 30*time.Second, "the encrypted file to be applied", func() bool {
		return c.count(`SELECT count(*) FROM run_files WHERE name = 'users.csv.pgp' AND status = 'applied'`) == 1
	})
	upload("tampered.csv.pgp", tampered)
	waitFor(t, 30*time.Second, "the tampered file to be rejected", func() bool {
		return c.count(`SELECT count(*) FROM run_files WHERE name = 'tampered.csv.pgp' AND error_code = 'decrypt_failed'`) == 1
	})
	for _, m := range mail.Messages(t, 2) {
		if m.Login != "roster" {
			t.Errorf("e-mail sent without the SMTP login (%q)", m.Login)
		}
		all.Write(m.Raw)
	}
	waitFor(t, 30*time.Second, "the runs to finish", func() bool {
		return c.count(`SELECT count(*) FROM runs WHERE status = 'running'`) == 0
	})
	for _, p := range []string{"/", "/metrics", "/healthz"} {
		all.Write([]byte(httpGet(t, "http://"+httpAddr+p)))
	}
	for _, name := range []string{"users.csv.pgp.report.csv", "tampered.csv.pgp.report.csv"} {
		f, err := sc.Open("/reports/" + name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		all.Write(b)
	}
	sc.Close()
	cl.Close()
	stopServe()
	all.Write([]byte(out.String() + errs.String()))
	// The operator's view of the ledger, and the tenants.
	all.Write([]byte(cmd("runs", "list", "--json")))
	var ids []int64
	if err := c.db.Select(&ids, `SELECT id FROM runs ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		cmd("runs", "show", fmt.Sprint(id), "--json")
	}
	cmd("tenant", "list", "--json")
	// What must never appear.
	var hash string
	var privKey []byte
	if err := c.db.QueryRow(`SELECT sftp_password_hash, pgp_private_key FROM tenants WHERE id = 'acme'`).Scan(&hash, &privKey); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$2") || len(privKey) == 0 {
		t.Fatalf("tenant secrets not stored as expected: hash %.4q…, key %d bytes", hash, len(privKey))
	}
	secrets := map[string]string{
		"the SFTP password":                      sftpPassword,
		"the wrong SFTP password":                wrongPassword,
		"the key passphrase":                     passphrase,
		"the SMTP password":                      smtpPassword,
		"the SMTP password, base64 (AUTH PLAIN)": base64.StdEncoding.EncodeToString([]byte("\x00roster\x00" + smtpPassword)),
		"the database password":                  dbPassword,
		"the bcrypt hash":                        hash,
		"a private key block":                    "PRIVATE KEY",
	}
	// Pieces of the stored (encrypted) PGP private key and of the SSH host
	// key, as they would appear if either were printed. (The private key
	// holds the public one, which is printed on purpose: pieces of it are
	// not secrets.)
	for i, piece := range keyPieces(privKey, pub) {
		secrets[fmt.Sprintf("the stored PGP private key, piece %d", i)] = piece
	}
	hostKey, err := os.ReadFile(filepath.Join(c.dataDir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	for i, piece := range keyPieces(hostKey, "") {
		secrets[fmt.Sprintf("the SSH host key, piece %d", i)] = piece
	}
	text := all.String()
	// The search covers what it must: debug logs, the failed logins,
	// decryption, the e-mails sent.
	for _, want := range []string{`"level":"DEBUG"`, "login failed", "decrypt_failed", "report e-mail sent", "BEGIN PGP PUBLIC KEY"} {
		if !strings.Contains(text, want) {
			t.Errorf("the collected output (%d bytes) lacks %q: it proves too little", len(text), want)
		}
	}
	if n := len(keyPieces(privKey, pub)); n < 2 {
		t.Errorf("only %d pieces of the private key to look for", n)
	}
	for what, s := range secrets {
		if strings.Contains(text, s) {
			i := strings.Index(text, s)
			t.Errorf("%s appears in roster's output: …%s…", what, text[max(0, i-200):min(len(text), i+len(s)+50)])
		}
	}
	t.Logf("searched %d bytes of logs, output, reports, e-mails and pages for %d secrets", len(text), len(secrets))
}

// keyPieces returns a few 24-character runs of a key file's armored or
// base64 body (or of its raw bytes, base64-encoded, if it is binary) that
// public does not contain.
func keyPieces(key []byte, public string) []string {
	body := string(key)
	if !strings.Contains(body, "-----BEGIN") {
		body = base64.StdEncoding.EncodeToString(key)
	}
	var pieces []string
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if len(line) >= 48 && !strings.ContainsAny(line, " :-") && !strings.Contains(public, line[12:36]) {
			pieces = append(pieces, line[12:36])
		}
		if len(pieces) == 4 {
			break
		}
	}
	if len(pieces) == 0 && len(body) >= 100 {
		pieces = append(pieces, body[40:64], body[len(body)/2:len(body)/2+24])
	}
	return pieces
}

// TestServeRefusesWithoutPassphrase: with a tenant holding a PGP key, serve
// without ROSTER_KEY_PASSPHRASE is a start-up error (exit 2) that says what
// is missing, before it listens.
func TestServeRefusesWithoutPassphrase(t *testing.T) {
	c := newCLI(t)
	t.Setenv("ROSTER_KEY_PASSPHRASE", "test-only-passphrase")
	c.must("tenant", "add", "acme")
	c.must("keys", "generate", "acme")
	t.Setenv("ROSTER_KEY_PASSPHRASE", "")
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, out, errs := c.roster(ctx, "serve", "--sftp-listen", addr)
	if code != exitUsage {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitUsage, out, errs)
	}
	want := "ROSTER_KEY_PASSPHRASE is not set, but tenants acme have PGP keys it unlocks"
	if !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("stderr %q, want one line saying %q", errs, want)
	}
	if strings.Contains(out, "host key") {
		t.Fatalf("serve started before refusing: %q", out)
	}
	// Without any key, no passphrase is needed.
	c2 := newCLI(t)
	c2.must("tenant", "add", "globex")
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var o2, e2 syncBuf
	go func() {
		done <- run(ctx2, []string{"--db", c2.url, "--data-dir", c2.dataDir, "serve", "--sftp-listen", freeAddr(t)}, &o2, &e2)
	}()
	waitFor(t, 10*time.Second, "serve to start", func() bool { return strings.Contains(o2.String(), "host key SHA256:") })
	cancel2()
	if code := <-done; code != 0 {
		t.Fatalf("serve without keys exited %d: %s", code, e2.String())
	}
}
