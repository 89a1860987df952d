package email_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages/report"
	"github.com/roster-hr/roster/stages/report/email"
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
func python(t *testing.T) string {
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

func freePort(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return net.JoinHostPort(host, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
}

type server struct {
	Addr string
	dir  string
}

type received struct {
	MailFrom string   `json:"mail_from"`
	RcptTos  []string `json:"rcpt_tos"`
	Login    string   `json:"login"`
	TLS      bool     `json:"tls"`
	Data     string   `json:"data"`
	msg      *mail.Message
	raw      []byte
}

// startSMTP starts aiosmtpd on a free loopback port; env sets SMTP_USER,
// SMTP_PASS (require AUTH), SMTP_CERT and SMTP_KEY (offer and require
// STARTTLS).
func startSMTP(t *testing.T, env ...string) *server {
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
	addr := freePort(t, "127.0.0.1")
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
	return &server{Addr: addr, dir: out}
}

// messages waits until n messages arrived and returns them, parsed.
func (s *server) messages(t *testing.T, n int) []*received {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := filepath.Glob(filepath.Join(s.dir, "*.json"))
		if len(names) >= n || time.Now().After(deadline) {
			sort.Strings(names)
			var out []*received
			for _, name := range names {
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				var r received
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatal(err)
				}
				if r.raw, err = base64.StdEncoding.DecodeString(r.Data); err != nil {
					t.Fatal(err)
				}
				if r.msg, err = mail.ReadMessage(bytes.NewReader(r.raw)); err != nil {
					t.Fatalf("parse message: %v\n%s", err, r.raw)
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

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tenant(contact string) *pipeline.Tenant {
	t := pipeline.NewTenant("acme")
	t.ContactEmail = contact
	return t
}

func rejectedFile(name string) *pipeline.File {
	f := &pipeline.File{Name: name, Status: pipeline.StatusRejected, Kind: schemas.KindUsers,
		Err: &pipeline.Rejection{Code: schemas.CodeMissingRequiredColumn, Message: `the required column "email" is missing`}}
	f.Issues.Add(pipeline.Issue{Code: schemas.CodeUnknownColumn, Severity: pipeline.SeverityWarning, Column: "e-mail", Message: `column "e-mail" is not part of the template`})
	f.Issues.Add(pipeline.Issue{Code: schemas.CodeMissingRequiredColumn, Severity: pipeline.SeverityError, Message: `the required column "email" is missing`})
	return f
}

// appliedFile is a users file applied with n row errors and one warning.
func appliedFile(name string, n int) *pipeline.File {
	f := &pipeline.File{Name: name, Status: pipeline.StatusApplied, Kind: schemas.KindUsers,
		Counts: pipeline.Counts{Rows: 40, Created: 21, Updated: 4, Deactivated: 2, Reactivated: 1, Scheduled: 3, Unchanged: 9}}
	f.Issues.Add(pipeline.Issue{Row: 2, Column: "title", Code: schemas.CodeFieldTooLong, Severity: pipeline.SeverityWarning, Message: "title is longer than 200 characters"})
	for i := range n {
		code := schemas.CodeEmailInvalid
		if i%2 == 1 {
			code = schemas.CodeInvalidDate
		}
		f.Issues.Add(pipeline.Issue{Row: 3 + i, Column: "email", Code: code, Severity: pipeline.SeverityError,
			Message: fmt.Sprintf("problem number %d", i+1), Value: fmt.Sprintf("bad-%d", i+1)})
	}
	return f
}

func mailer(addr string, log io.Writer) *email.Mailer {
	return &email.Mailer{Addr: addr, From: "roster <roster@roster.example>", Log: slog.New(slog.NewTextHandler(log, nil)),
		Retries: 1, Backoff: 10 * time.Millisecond, Timeout: 5 * time.Second}
}

func subject(t *testing.T, m *mail.Message) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// parts splits a message into its text and, when there is one, its
// attachment (name and decoded bytes).
func parts(t *testing.T, m *mail.Message) (text string, attName string, att []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	if mt == "text/plain" {
		if params["charset"] != "utf-8" || m.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
			t.Fatalf("text headers: %v", m.Header)
		}
		return string(mustRead(t, quotedprintable.NewReader(m.Body))), "", nil
	}
	if mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q", mt)
	}
	r := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			return text, attName, att
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, cp, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch {
		case ct == "text/plain":
			if cp["charset"] != "utf-8" {
				t.Errorf("text part charset %q", cp["charset"])
			}
			text = string(mustRead(t, part)) // multipart decodes quoted-printable
		case part.FileName() != "":
			if ct != "text/csv" || part.Header.Get("Content-Transfer-Encoding") != "base64" {
				t.Errorf("attachment headers %v", part.Header)
			}
			attName = part.FileName()
			att, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, part))
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected part %v", part.Header)
		}
	}
}

func mustRead(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRejectedFile(t *testing.T) {
	const password = "s3cret-Pa55word"
	srv := startSMTP(t, "SMTP_USER=roster", "SMTP_PASS="+password)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	m.Username, m.Password = "roster", password
	m.Now = func() time.Time { return time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC) }
	f := rejectedFile("users.csv")

	if err := m.FileReport(context.Background(), tenant("IT Team <it@acme.example>"), f, 42); err != nil {
		t.Fatalf("FileReport: %v\nlogs:\n%s", err, logs.String())
	}
	r := srv.messages(t, 1)[0]
	if r.MailFrom != "roster@roster.example" || strings.Join(r.RcptTos, ",") != "it@acme.example" || r.Login != "roster" {
		t.Errorf("envelope: from %q to %q login %q", r.MailFrom, r.RcptTos, r.Login)
	}
	h := r.msg.Header
	if got, want := subject(t, r.msg), "[roster] acme: users.csv rejected — missing_required_column"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	if !strings.HasPrefix(h.Get("Subject"), "=?utf-8?q?") {
		t.Errorf("Subject not Q-encoded: %q", h.Get("Subject"))
	}
	if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "it@acme.example" || to[0].Name != "IT Team" {
		t.Errorf("To %v (%v)", to, err)
	}
	if from, err := h.AddressList("From"); err != nil || from[0].Address != "roster@roster.example" {
		t.Errorf("From %v (%v)", from, err)
	}
	if d, err := h.Date(); err != nil || !d.Equal(m.Now()) {
		t.Errorf("Date %v (%v)", d, err)
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<roster.42.") || !strings.HasSuffix(id, "@roster.example>") {
		t.Errorf("Message-ID %q", id)
	}
	if h.Get("MIME-Version") != "1.0" {
		t.Errorf("MIME-Version %q", h.Get("MIME-Version"))
	}
	text, name, att := parts(t, r.msg)
	for _, want := range []string{"users.csv", "rejected", "missing_required_column", `the required column "email" is missing`,
		"Rows:     0", "0 created", "1 error, 1 warning", "/reports/users.csv.report.csv", "unknown_column", "column e-mail"} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
	// Errors come first in the body.
	if strings.Index(text, "file: missing_required_column") > strings.Index(text, "unknown_column") {
		t.Errorf("errors are not listed first:\n%s", text)
	}
	if name != "users.csv.report.csv" || !bytes.Equal(att, report.CSV(f)) {
		t.Errorf("attachment %q:\n%s\nwant\n%s", name, att, report.CSV(f))
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("password in logs:\n%s", logs.String())
	}
}

func TestAppliedWithErrors(t *testing.T) {
	srv := startSMTP(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	f := appliedFile("équipe été.csv", 12)
	if err := m.FileReport(context.Background(), tenant("it@acme.example, hr@acme.example"), f, 7); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.messages(t, 1)[0]
	if got := strings.Join(r.RcptTos, ","); got != "it@acme.example,hr@acme.example" {
		t.Errorf("recipients %q", got)
	}
	if got, want := subject(t, r.msg), "[roster] acme: équipe été.csv applied with 12 errors"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	text, name, att := parts(t, r.msg)
	for _, want := range []string{"équipe été.csv", "applied", "Rows:     40",
		"21 created, 4 updated, 2 deactivated, 1 reactivated, 3 scheduled, 9 unchanged", "12 errors, 1 warning",
		"row 3, column email: email_invalid (error) — problem number 1 (value \"bad-1\")",
		"row 4, column email: invalid_date", "problem number 10 ", "… and 3 more in the report",
		"/reports/équipe été.csv.report.csv", "attached"} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
	// Ten issues in words, errors first: the eleventh error and the warning
	// are only in the report.
	if strings.Contains(text, "problem number 11") || strings.Contains(text, "field_too_long") {
		t.Errorf("body lists more than the first 10 errors:\n%s", text)
	}
	if name != "équipe été.csv.report.csv" || !bytes.Equal(att, report.CSV(f)) {
		t.Errorf("attachment %q differs from the report", name)
	}
}

func TestHeaderInjection(t *testing.T) {
	srv := startSMTP(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	f := appliedFile("users\r\nBcc: evil@attacker.example\r\nX-Evil: 1\n.csv", 1)
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), f, 1); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.messages(t, 1)[0]
	if got := strings.Join(r.RcptTos, ","); got != "it@acme.example" {
		t.Errorf("recipients %q", got)
	}
	for _, k := range []string{"Bcc", "X-Evil"} {
		if v, ok := r.msg.Header[k]; ok {
			t.Errorf("injected header %s: %q", k, v)
		}
	}
	if got, want := subject(t, r.msg), "[roster] acme: users  Bcc: evil@attacker.example  X-Evil: 1 .csv applied with 1 error"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	// Invalid contact addresses are refused, not sent.
	err := m.FileReport(context.Background(), tenant("it@acme.example\r\nBcc: evil@attacker.example"), f, 1)
	if err == nil {
		t.Error("a contact address with CRLF was accepted")
	}
}

func TestLargeReportIsNotAttached(t *testing.T) {
	srv := startSMTP(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	f := appliedFile("big.csv", 0)
	for i := range 3000 {
		f.Issues.Add(pipeline.Issue{Row: 10 + i, Column: "email", Code: schemas.CodeEmailInvalid, Severity: pipeline.SeverityError,
			Message: strings.Repeat("x", 100), Value: "not-an-address"})
	}
	if n := len(report.CSV(f)); n < email.MaxAttachment {
		t.Fatalf("report is only %d bytes", n)
	}
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), f, 1); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.messages(t, 1)[0]
	text, name, att := parts(t, r.msg)
	if name != "" || att != nil {
		t.Errorf("a %d-byte report was attached", len(att))
	}
	for _, want := range []string{"3000 errors, 1 warning", "too large to attach", "/reports/big.csv.report.csv", "… and 2991 more"} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
}

func TestNothingToSend(t *testing.T) {
	// Nothing listens here: any attempt to send would fail.
	addr := freePort(t, "127.0.0.1")
	var logs logBuffer
	m := mailer(addr, &logs)
	clean := appliedFile("users.csv", 0)
	dup := rejectedFile("users.csv")
	dup.Status = pipeline.StatusDuplicate
	failed := rejectedFile("users.csv")
	failed.Status = pipeline.StatusFailed
	for name, c := range map[string]struct {
		tenant *pipeline.Tenant
		file   *pipeline.File
	}{
		"no contact":         {tenant(""), rejectedFile("users.csv")},
		"blank contact":      {tenant("  "), appliedFile("users.csv", 2)},
		"applied cleanly":    {tenant("it@acme.example"), clean},
		"duplicate":          {tenant("it@acme.example"), dup},
		"system failure":     {tenant("it@acme.example"), failed},
		"warnings only":      {tenant("it@acme.example"), func() *pipeline.File { f := appliedFile("w.csv", 0); return f }()},
		"planned with error": {tenant("it@acme.example"), func() *pipeline.File { f := appliedFile("p.csv", 1); f.Status = pipeline.StatusPlanned; return f }()},
	} {
		if err := m.FileReport(context.Background(), c.tenant, c.file, 1); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var nilMailer *email.Mailer
	if err := nilMailer.FileReport(context.Background(), tenant("it@acme.example"), rejectedFile("x.csv"), 1); err != nil {
		t.Errorf("nil mailer: %v", err)
	}
	if logs.String() != "" {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestServerDown(t *testing.T) {
	addr := freePort(t, "127.0.0.1") // closed again: connections are refused
	var logs logBuffer
	m := mailer(addr, &logs)
	m.Username, m.Password = "roster", "hunter2-secret"
	m.Retries, m.Backoff = 2, 20*time.Millisecond
	start := time.Now()
	err := m.FileReport(context.Background(), tenant("it@acme.example"), rejectedFile("users.csv"), 3)
	if err == nil {
		t.Fatal("FileReport succeeded with no server")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	l := logs.String()
	if n := strings.Count(l, "will retry"); n != 2 {
		t.Errorf("%d retries logged, want 2:\n%s", n, l)
	}
	if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "attempts=3") || strings.Contains(l, "hunter2") {
		t.Errorf("logs:\n%s", l)
	}

	// A cancelled context stops the retries at once.
	m.Retries, m.Backoff = 5, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := m.FileReport(ctx, tenant("it@acme.example"), rejectedFile("users.csv"), 3); err == nil {
		t.Fatal("FileReport succeeded with no server")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancelled send took %v", d)
	}
}

func TestPermanentRefusalIsNotRetried(t *testing.T) {
	srv := startSMTP(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	m.Retries, m.Backoff = 3, time.Hour // a retry would hang the test
	err := m.FileReport(context.Background(), tenant("rejected@acme.example"), rejectedFile("users.csv"), 3)
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(logs.String(), "will retry") {
		t.Errorf("a 550 was retried:\n%s", logs.String())
	}
}

// TestSTARTTLS: a server that offers STARTTLS and accepts AUTH only over
// TLS gets the message over TLS, logged in.
func TestSTARTTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600) //nolint:errcheck
	os.WriteFile(keyFile, keyPEM, 0o600)   //nolint:errcheck
	srv := startSMTP(t, "SMTP_USER=roster", "SMTP_PASS=pw", "SMTP_CERT="+certFile, "SMTP_KEY="+keyFile)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	m.Username, m.Password = "roster", "pw"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	m.TLSConfig = &tls.Config{RootCAs: pool}
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), rejectedFile("users.csv"), 5); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.messages(t, 1)[0]
	if !r.TLS || r.Login != "roster" {
		t.Errorf("tls %v login %q", r.TLS, r.Login)
	}

	// Without trusting the certificate, nothing is sent (and no password).
	m.TLSConfig = nil
	m.Retries = -1
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), rejectedFile("users.csv"), 5); err == nil ||
		!strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("untrusted certificate: err = %v", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "roster test smtp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}
