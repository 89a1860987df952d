package decrypt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// gpgHome is a throw-away GnuPG home for one test. Tests talk to the real
// gpg binary because interoperability with what customers run is the point;
// ciphertext made by go-crypto itself would only test go-crypto against
// itself.
type gpgHome struct {
	t   testing.TB
	dir string
}

// newGPG creates a GnuPG home under os.TempDir with a short name: the
// agent's socket lives there and Unix socket paths are limited to ~108
// bytes, which t.TempDir's long per-test paths can exceed.
func newGPG(t testing.TB) *gpgHome {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not found on PATH; install GnuPG to run the interoperability tests")
	}
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, dir: dir}
	t.Cleanup(func() {
		// Stop the agent this home may have started, then remove it.
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+dir)
		_ = cmd.Run()
		_ = os.RemoveAll(dir)
	})
	return g
}

// run runs gpg with the test home and batch options, feeding stdin, and
// returns stdout; it fails the test on error.
func (g *gpgHome) run(stdin io.Reader, args ...string) []byte {
	g.t.Helper()
	out, err := g.try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (g *gpgHome) try(stdin io.Reader, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--homedir", g.dir, "--batch", "--yes", "--no-tty", "--quiet", "--trust-model", "always"}
	cmd := exec.CommandContext(ctx, "gpg", append(base, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.dir)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.Bytes(), nil
}

func (g *gpgHome) importKey(armored string) {
	g.t.Helper()
	g.run(strings.NewReader(armored), "--import")
}

// encrypt encrypts plaintext with gpg; extra holds recipients and options.
func (g *gpgHome) encrypt(plaintext []byte, extra ...string) []byte {
	g.t.Helper()
	return g.run(bytes.NewReader(plaintext), append(extra, "--encrypt", "--output", "-")...)
}

// genSigningKey makes a customer-side signing key with no passphrase and
// returns its user id.
func (g *gpgHome) genSigningKey() string {
	g.t.Helper()
	const uid = "Customer Signer <signer@example.com>"
	g.run(nil, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
	return "signer@example.com"
}

var (
	gpgVersionOnce sync.Once
	gpgMajor       int
	gpgMinor       int
	gpgVersionLine string
)

// gpgVersion returns the installed gpg's major and minor version.
func gpgVersion(t testing.TB) (major, minor int) {
	gpgVersionOnce.Do(func() {
		out, err := exec.Command("gpg", "--version").Output()
		if err != nil {
			return
		}
		gpgVersionLine = strings.SplitN(string(out), "\n", 2)[0]
		m := regexp.MustCompile(`(\d+)\.(\d+)\.\d+`).FindStringSubmatch(gpgVersionLine)
		if m != nil {
			gpgMajor, _ = strconv.Atoi(m[1])
			gpgMinor, _ = strconv.Atoi(m[2])
		}
	})
	t.Logf("using %s", gpgVersionLine)
	return gpgMajor, gpgMinor
}
