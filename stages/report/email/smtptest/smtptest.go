// Package smtptest runs a real SMTP server (Debian's python3-aiosmtpd) on
// loopback for tests, and reads back what it received.
package smtptest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// smtpd is a real SMTP server (aiosmtpd) that writes each accepted message,
// with its envelope, to a JSON file in a directory.
const smtpd = `
import base64, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
user, pw = os.environ.get("SMTP_USER", ""), os.environ.get("SMTP_PASS", "")
cert, key = os.environ.get("SMTP_CERT", ""), os.environ.get("SMTP_KEY", "")

class Handler:
    n = 0
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        Handler.n += 1
        login = session.auth_data
        rec = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "login": login if isinstance(login, str) else "",
               "tls": session.ssl is not None,
               "data": base64.b64encode(envelope.original_content or envelope.content).decode()}
        tmp = os.path.join(outdir, ".%d.tmp" % Handler.n)
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(outdir, "%04d.json" % Handler.n))
        return "250 Message accepted for delivery"

def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == pw
    return AuthResult(success=ok, auth_data=data.login.decode() if ok else None)

kw = {}
if user:
    kw.update(authenticator=authenticate, auth_required=True, auth_require_tls=bool(cert))
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kw.update(tls_context=ctx, require_starttls=True)
c = Controller(Handler(), hostname=host, port=port, **kw)
c.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
`

// python returns a Python that has aiosmtpd: Debian's (python3-aiosmtpd)
// first, whatever python3 is on PATH otherwise.
func python(t testing.TB) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import aiosmtpd").Run() == nil {
			return py
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("python3 with aiosmtpd is required (apt-get install python3-aiosmtpd)")
	}
	t.Skip("python3 with aiosmtpd is not installed (apt-get install python3-aiosmtpd)")
	return ""
}

// FreePort returns a loopback address nothing listens on (yet).
func FreePort(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return net.JoinHostPort(host, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
}

// Server is a running aiosmtpd.
type Server struct {
	Addr string // 127.0.0.1:port
	dir  string
}

// Message is one accepted message with its envelope.
type Message struct {
	MailFrom string   `json:"mail_from"`
	RcptTos  []string `json:"rcpt_tos"`
	Login    string   `json:"login"`
	TLS      bool     `json:"tls"`
	Data     string   `json:"data"`
	Msg      *mail.Message
	Raw      []byte
}

// Start starts aiosmtpd on a free loopback port; env sets SMTP_USER,
// SMTP_PASS (require AUTH), SMTP_CERT and SMTP_KEY (offer and require
// STARTTLS).
func Start(t testing.TB, env ...string) *Server {
	t.Helper()
	py := python(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "smtpd.py")
	if err := os.WriteFile(script, []byte(smtpd), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mail")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := FreePort(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(py, script, host, port, out)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck // may have exited
		cmd.Wait()         //nolint:errcheck
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "READY" {
			err = fmt.Errorf("unexpected output %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout) //nolint:errcheck
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("aiosmtpd did not start: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("aiosmtpd did not start in time\n%s", stderr.String())
	}
	return &Server{Addr: addr, dir: out}
}

// Messages waits until n messages arrived and returns them, parsed.
func (s *Server) Messages(t testing.TB, n int) []*Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := filepath.Glob(filepath.Join(s.dir, "*.json"))
		if len(names) >= n || time.Now().After(deadline) {
			sort.Strings(names)
			var out []*Message
			for _, name := range names {
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				var r Message
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatal(err)
				}
				if r.Raw, err = base64.StdEncoding.DecodeString(r.Data); err != nil {
					t.Fatal(err)
				}
				if r.Msg, err = mail.ReadMessage(bytes.NewReader(r.Raw)); err != nil {
					t.Fatalf("parse message: %v\n%s", err, r.Raw)
				}
				out = append(out, &r)
			}
			if len(out) != n {
				t.Fatalf("got %d messages, want %d", len(out), n)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}
