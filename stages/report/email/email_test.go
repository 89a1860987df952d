package email_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages/report"
	"github.com/roster-hr/roster/stages/report/email"
	"github.com/roster-hr/roster/stages/report/email/smtptest"
)

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
	srv := smtptest.Start(t, "SMTP_USER=roster", "SMTP_PASS="+password)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	m.Username, m.Password = "roster", password
	m.Now = func() time.Time { return time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC) }
	f := rejectedFile("users.csv")

	if err := m.FileReport(context.Background(), tenant("IT Team <it@acme.example>"), f, 42); err != nil {
		t.Fatalf("FileReport: %v\nlogs:\n%s", err, logs.String())
	}
	r := srv.Messages(t, 1)[0]
	if r.MailFrom != "roster@roster.example" || strings.Join(r.RcptTos, ",") != "it@acme.example" || r.Login != "roster" {
		t.Errorf("envelope: from %q to %q login %q", r.MailFrom, r.RcptTos, r.Login)
	}
	h := r.Msg.Header
	if got, want := subject(t, r.Msg), "[roster] acme: users.csv rejected — missing_required_column"; got != want {
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
	text, name, att := parts(t, r.Msg)
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
	srv := smtptest.Start(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	f := appliedFile("équipe été.csv", 12)
	if err := m.FileReport(context.Background(), tenant("it@acme.example, hr@acme.example"), f, 7); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.Messages(t, 1)[0]
	if got := strings.Join(r.RcptTos, ","); got != "it@acme.example,hr@acme.example" {
		t.Errorf("recipients %q", got)
	}
	if got, want := subject(t, r.Msg), "[roster] acme: équipe été.csv applied with 12 errors"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	text, name, att := parts(t, r.Msg)
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
	srv := smtptest.Start(t)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	f := appliedFile("users\r\nBcc: evil@attacker.example\r\nX-Evil: 1\n.csv", 1)
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), f, 1); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.Messages(t, 1)[0]
	if got := strings.Join(r.RcptTos, ","); got != "it@acme.example" {
		t.Errorf("recipients %q", got)
	}
	for _, k := range []string{"Bcc", "X-Evil"} {
		if v, ok := r.Msg.Header[k]; ok {
			t.Errorf("injected header %s: %q", k, v)
		}
	}
	if got, want := subject(t, r.Msg), "[roster] acme: users  Bcc: evil@attacker.example  X-Evil: 1 .csv applied with 1 error"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	// Invalid contact addresses are refused, not sent.
	err := m.FileReport(context.Background(), tenant("it@acme.example\r\nBcc: evil@attacker.example"), f, 1)
	if err == nil {
		t.Error("a contact address with CRLF was accepted")
	}
}

func TestLargeReportIsNotAttached(t *testing.T) {
	srv := smtptest.Start(t)
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
	r := srv.Messages(t, 1)[0]
	text, name, att := parts(t, r.Msg)
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
	addr := smtptest.FreePort(t, "127.0.0.1")
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
	addr := smtptest.FreePort(t, "127.0.0.1") // closed again: connections are refused
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
	srv := smtptest.Start(t)
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
	srv := smtptest.Start(t, "SMTP_USER=roster", "SMTP_PASS=pw", "SMTP_CERT="+certFile, "SMTP_KEY="+keyFile)
	var logs logBuffer
	m := mailer(srv.Addr, &logs)
	m.Username, m.Password = "roster", "pw"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	m.TLSConfig = &tls.Config{RootCAs: pool}
	if err := m.FileReport(context.Background(), tenant("it@acme.example"), rejectedFile("users.csv"), 5); err != nil {
		t.Fatalf("FileReport: %v\n%s", err, logs.String())
	}
	r := srv.Messages(t, 1)[0]
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
