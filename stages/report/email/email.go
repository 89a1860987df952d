// Package email tells a tenant's technical contact, by e-mail, when one of
// their files was rejected or applied with row errors: which file, what
// became of it, its counts, the first issues in words, and where the full
// report is (/reports/<file>.report.csv in their SFTP home), with the report
// attached when it is small.
//
// Sending is best effort: a failed send is logged and tried again a bounded
// number of times with backoff, and never fails the run. FileReport returns
// the last error so the caller can log it; it is never a reason to stop.
package email

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/report"
)

// Defaults for the zero values of Mailer's knobs. The worst case of one
// FileReport against a server that never answers is about
// (DefaultRetries+1)*DefaultTimeout plus the backoffs (2s, 4s): about 70s.
const (
	DefaultRetries = 2
	DefaultBackoff = 2 * time.Second
	DefaultTimeout = 20 * time.Second
	// MaxBackoff caps the doubling backoff between two attempts.
	MaxBackoff = 30 * time.Second
	// MaxAttachment is the size under which the report CSV is attached.
	MaxAttachment = 256 << 10
	// IssuesInBody is how many issues the e-mail lists in words.
	IssuesInBody = 10
)

// Mailer sends the per-file e-mails over SMTP.
type Mailer struct {
	// Addr is the SMTP server, host:port. Port 465 speaks implicit TLS;
	// any other port upgrades with STARTTLS whenever the server offers it.
	Addr string
	// From is the sender, "roster <roster@example.com>" or a bare address.
	From string
	// Username and Password, when Username is set, log in with AUTH PLAIN,
	// only over TLS or to a loopback server: the password is never sent in
	// the clear over a network. The password is never logged.
	Username string
	Password string
	// Log receives one line per failed attempt and one per sent e-mail;
	// nil: slog.Default().
	Log *slog.Logger
	// Retries is how many times a failed send is tried again (0:
	// DefaultRetries; negative: never). A permanent refusal (an SMTP 5xx
	// reply, an address that does not parse) is not tried again.
	Retries int
	// Backoff is the wait before the first retry, doubled for each next one
	// up to MaxBackoff (0: DefaultBackoff).
	Backoff time.Duration
	// Timeout bounds one attempt: connecting and the whole SMTP exchange
	// (0: DefaultTimeout).
	Timeout time.Duration
	// TLSConfig, when set, is used for STARTTLS and implicit TLS (its
	// ServerName defaults to Addr's host): to trust a private CA.
	TLSConfig *tls.Config
	// Hello is the name sent in EHLO (empty: this machine's host name).
	Hello string
	// Now is the clock for the Date header (nil: time.Now).
	Now func() time.Time
}

// Wants reports whether f calls for an e-mail: it was rejected, or applied
// with row errors.
func Wants(f *pipeline.File) bool {
	return f.Status == pipeline.StatusRejected || (f.Status == pipeline.StatusApplied && f.Issues.Errors > 0)
}

// FileReport e-mails the tenant's technical contact about f when f was
// rejected or applied with row errors; otherwise, or when the tenant has no
// contact e-mail, it does nothing. The send is tried again on failure with
// backoff, a bounded number of times; the returned error is for logging
// only and must never fail the run.
func (m *Mailer) FileReport(ctx context.Context, tenant *pipeline.Tenant, f *pipeline.File, runID int64) error {
	if m == nil || tenant == nil || f == nil || strings.TrimSpace(tenant.ContactEmail) == "" || !Wants(f) {
		return nil
	}
	log := m.log().With("tenant", tenant.ID, "file", oneLine(f.Name), "run", runID)
	from, to, msg, err := m.compose(tenant, f, runID)
	if err != nil {
		log.Error("report e-mail not sent", "err", err)
		return fmt.Errorf("report e-mail for %s: %w", oneLine(f.Name), err)
	}
	rcpts := make([]string, len(to))
	for i, a := range to {
		rcpts[i] = a.Address
	}
	attempts := m.Retries + 1
	if m.Retries == 0 {
		attempts = DefaultRetries + 1
	} else if m.Retries < 0 {
		attempts = 1
	}
	wait := m.Backoff
	if wait <= 0 {
		wait = DefaultBackoff
	}
	for attempt := 1; ; attempt++ {
		err = m.send(ctx, from.Address, rcpts, msg)
		if err == nil {
			log.Info("report e-mail sent", "to", strings.Join(rcpts, ","), "attempts", attempt)
			return nil
		}
		if attempt >= attempts || permanent(err) || ctx.Err() != nil {
			log.Error("report e-mail not sent", "to", strings.Join(rcpts, ","), "attempts", attempt, "err", err)
			return fmt.Errorf("report e-mail for %s to %s: %w", oneLine(f.Name), strings.Join(rcpts, ","), err)
		}
		log.Warn("report e-mail failed; will retry", "to", strings.Join(rcpts, ","), "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Error("report e-mail not sent", "to", strings.Join(rcpts, ","), "attempts", attempt, "err", ctx.Err())
			return fmt.Errorf("report e-mail for %s: %w (after %v)", oneLine(f.Name), ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, MaxBackoff)
	}
}

func (m *Mailer) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// permanentError marks a failure that another attempt would not change.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) bool {
	var p permanentError
	if errors.As(err, &p) {
		return true
	}
	var tp *textproto.Error
	return errors.As(err, &tp) && tp.Code >= 500
}

// Subject is the e-mail's subject, before encoding: "[roster] acme:
// users.csv rejected — missing_required_column" or "[roster] acme: users.csv
// applied with 3 errors". Control characters (CR, LF…) never reach it.
func Subject(tenant string, f *pipeline.File) string {
	name := clip(oneLine(f.Name), 120)
	s := fmt.Sprintf("[roster] %s: %s %s", oneLine(tenant), name, f.Status)
	switch {
	case f.Status == pipeline.StatusRejected:
		if code := rejectionCode(f); code != "" {
			s += " — " + code
		}
	default:
		s += " with " + plural(f.Issues.Errors, "error")
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func rejectionCode(f *pipeline.File) string {
	var rej *pipeline.Rejection
	if errors.As(f.Err, &rej) {
		return oneLine(rej.Code)
	}
	for _, is := range f.Issues.List() {
		if is.Severity == pipeline.SeverityError {
			return oneLine(is.Code)
		}
	}
	return ""
}

// compose builds the whole message, headers and body, with CRLF line ends.
func (m *Mailer) compose(tenant *pipeline.Tenant, f *pipeline.File, runID int64) (*mail.Address, []*mail.Address, []byte, error) {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, nil, nil, permanentError{fmt.Errorf("sender %q: %w", oneLine(m.From), err)}
	}
	to, err := mail.ParseAddressList(tenant.ContactEmail)
	if err != nil {
		return nil, nil, nil, permanentError{fmt.Errorf("contact e-mail %q of tenant %s: %w", oneLine(tenant.ContactEmail), tenant.ID, err)}
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	csv := report.CSV(f)
	attach := len(csv) < MaxAttachment
	reportName := report.Name(oneLine(f.Name))
	attachName := reportName
	if mime.FormatMediaType("attachment", map[string]string{"filename": attachName}) == "" {
		attachName = "report.csv"
	}

	var msg bytes.Buffer
	hdr := func(k, v string) { msg.WriteString(k + ": " + v + "\r\n") }
	hdr("Date", now().Format(time.RFC1123Z))
	hdr("Message-ID", messageID(from.Address, runID))
	hdr("From", from.String())
	tos := make([]string, len(to))
	for i, a := range to {
		tos[i] = a.String()
	}
	hdr("To", strings.Join(tos, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", Subject(tenant.ID, f)))
	hdr("MIME-Version", "1.0")
	// RFC 3834: no vacation auto-replies to a machine.
	hdr("Auto-Submitted", "auto-generated")
	hdr("X-Roster-Tenant", oneLine(tenant.ID))
	hdr("X-Roster-Run", strconv.FormatInt(runID, 10))

	body := m.body(tenant, f, runID, reportName, attach, len(csv))
	if !attach {
		hdr("Content-Type", "text/plain; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		msg.WriteString("\r\n")
		writeQP(&msg, body)
		return from, to, msg.Bytes(), nil
	}
	mw := multipart.NewWriter(&msg)
	hdr("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()}))
	msg.WriteString("\r\nThis is a MIME message: the report is attached.\r\n")
	pw, _ := mw.CreatePart(textproto.MIMEHeader{ //nolint:errcheck // bytes.Buffer
		"Content-Type":              {"text/plain; charset=utf-8"},
		"Content-Transfer-Encoding": {"quoted-printable"},
	})
	writeQP(pw, body)
	aw, _ := mw.CreatePart(textproto.MIMEHeader{ //nolint:errcheck // bytes.Buffer
		"Content-Type":              {mime.FormatMediaType("text/csv", map[string]string{"charset": "utf-8", "name": attachName})},
		"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": attachName})},
		"Content-Transfer-Encoding": {"base64"},
	})
	writeBase64(aw, csv)
	mw.Close() //nolint:errcheck // bytes.Buffer
	return from, to, msg.Bytes(), nil
}

// body is the message text in words.
func (m *Mailer) body(tenant *pipeline.Tenant, f *pipeline.File, runID int64, reportName string, attached bool, csvSize int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	name := oneLine(f.Name)
	p("Hello,")
	p("")
	switch f.Status {
	case pipeline.StatusRejected:
		p("roster rejected the file %q uploaded for %s: nothing in it was applied.", name, tenant.ID)
	default:
		p("roster applied the file %q uploaded for %s, but found %s in it: the rows (or the fields) in error were not applied.", name, tenant.ID, plural(f.Issues.Errors, "error"))
	}
	p("")
	p("File:     %s", name)
	status := string(f.Status)
	if f.Status == pipeline.StatusRejected {
		var rej *pipeline.Rejection
		if errors.As(f.Err, &rej) {
			status += " — " + oneLine(rej.Code) + ": " + oneLine(rej.Message)
		} else if code := rejectionCode(f); code != "" {
			status += " — " + code
		}
	}
	p("Status:   %s", status)
	if f.Kind != "" {
		p("Kind:     %s", f.Kind)
	}
	p("Run:      %d", runID)
	c := f.Counts
	p("Rows:     %d", c.Rows)
	p("Applied:  %d created, %d updated, %d deactivated, %d reactivated, %d scheduled, %d unchanged",
		c.Created, c.Updated, c.Deactivated, c.Reactivated, c.Scheduled, c.Unchanged)
	p("Issues:   %s, %s", plural(f.Issues.Errors, "error"), plural(f.Issues.Warnings, "warning"))
	p("")
	list := firstIssues(f.Issues.List(), IssuesInBody)
	if len(list) > 0 {
		p("First issues:")
		for _, is := range list {
			p("  - %s", describe(is))
		}
		if more := f.Issues.Total() - len(list); more > 0 {
			p("  … and %d more in the report.", more)
		}
		p("")
	}
	p("The full report is in your SFTP home at /reports/%s.", reportName)
	if attached {
		p("It is also attached to this e-mail.")
	} else {
		p("It is too large to attach here (%d bytes).", csvSize)
	}
	p("")
	if f.Status == pipeline.StatusRejected {
		p("Please fix the file and upload it again to /incoming.")
	} else {
		p("Please fix the rows listed in the report and upload the file again to /incoming.")
	}
	p("")
	p("-- ")
	p("roster: this message was sent automatically; replies are not read.")
	return b.String()
}

// firstIssues picks up to n issues, errors first, each group in file order.
func firstIssues(all []pipeline.Issue, n int) []pipeline.Issue {
	out := make([]pipeline.Issue, 0, n)
	for _, errs := range []bool{true, false} {
		for _, is := range all {
			if len(out) == n {
				return out
			}
			if (is.Severity == pipeline.SeverityError) == errs {
				out = append(out, is)
			}
		}
	}
	return out
}

// describe puts one issue in words: "row 12, column email: email_invalid
// (error) — message (value "x")".
func describe(is pipeline.Issue) string {
	var b strings.Builder
	if is.Row > 0 {
		fmt.Fprintf(&b, "row %d", is.Row)
	} else {
		b.WriteString("file")
	}
	if is.Column != "" {
		b.WriteString(", column " + clip(oneLine(is.Column), 80))
	}
	fmt.Fprintf(&b, ": %s (%s)", oneLine(is.Code), is.Severity)
	if is.Message != "" {
		b.WriteString(" — " + clip(oneLine(is.Message), 300))
	}
	if is.Value != "" {
		fmt.Fprintf(&b, " (value %q)", clip(oneLine(is.Value), 80))
	}
	return b.String()
}

// oneLine replaces control characters (CR, LF, tabs, NUL…) and invalid
// UTF-8 with spaces, so nothing from a file name or a cell can start a new
// header or line.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == utf8.RuneError || r == '\u2028' || r == '\u2029'
	}) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// clip shortens s to at most n runes.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func messageID(from string, runID int64) string {
	domain := "roster.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && validDomain(from[i+1:]) {
		domain = from[i+1:]
	}
	b := make([]byte, 12)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return fmt.Sprintf("<roster.%d.%s@%s>", runID, hex.EncodeToString(b), domain)
}

func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func writeQP(w io.Writer, text string) {
	qp := quotedprintable.NewWriter(w)
	qp.Write([]byte(strings.ReplaceAll(text, "\n", "\r\n"))) //nolint:errcheck // bytes.Buffer underneath
	qp.Close()                                               //nolint:errcheck
}

func writeBase64(w io.Writer, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		io.WriteString(w, enc[:76]+"\r\n") //nolint:errcheck // bytes.Buffer underneath
		enc = enc[76:]
	}
	io.WriteString(w, enc+"\r\n") //nolint:errcheck
}

// send makes one SMTP attempt, bounded by Timeout and ctx.
func (m *Mailer) send(ctx context.Context, from string, to []string, msg []byte) (err error) {
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return permanentError{fmt.Errorf("smtp address %q: %w", m.Addr, err)}
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("connect %s: %w", m.Addr, err)
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline) //nolint:errcheck // a plain TCP conn
	// A cancelled ctx unblocks the exchange at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) }) //nolint:errcheck
	defer stop()
	tlsConf := m.tlsConfig(host)
	implicit := port == "465"
	if implicit {
		conn = tls.Client(conn, tlsConf)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: greeting: %w", m.Addr, err)
	}
	defer c.Close()
	if err := c.Hello(m.helloName()); err != nil {
		return fmt.Errorf("smtp %s: EHLO: %w", m.Addr, err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && !implicit {
		if err := c.StartTLS(tlsConf); err != nil {
			return fmt.Errorf("smtp %s: STARTTLS: %w", m.Addr, err)
		}
	}
	_, encrypted := c.TLSConnectionState()
	if m.Username != "" {
		if !encrypted && !loopback(host) {
			return permanentError{fmt.Errorf("smtp %s: refusing to log in over an unencrypted connection (the server offers no STARTTLS)", m.Addr)}
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			return permanentError{fmt.Errorf("smtp %s: a user name is set but the server offers no AUTH", m.Addr)}
		}
		if err := c.Auth(plainAuth{user: m.Username, pass: m.Password, allowed: encrypted || loopback(host)}); err != nil {
			return fmt.Errorf("smtp %s: AUTH as %s: %w", m.Addr, m.Username, err)
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", m.Addr, err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return fmt.Errorf("smtp %s: RCPT TO %s: %w", m.Addr, rcpt, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", m.Addr, err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", m.Addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", m.Addr, err)
	}
	c.Quit() //nolint:errcheck // the message is accepted; a failed QUIT changes nothing
	return nil
}

func (m *Mailer) tlsConfig(host string) *tls.Config {
	var c *tls.Config
	if m.TLSConfig != nil {
		c = m.TLSConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

func (m *Mailer) helloName() string {
	if m.Hello != "" {
		return oneLine(m.Hello)
	}
	if h, err := os.Hostname(); err == nil && validDomain(h) {
		return h
	}
	return "localhost"
}

// loopback reports whether host is this machine: "localhost" or a loopback
// IP literal. The name is not resolved.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// plainAuth is AUTH PLAIN (RFC 4616) that sends the password only when the
// connection is encrypted or to this machine; net/smtp's PlainAuth accepts
// only the literal names localhost, 127.0.0.1 and ::1.
type plainAuth struct {
	user, pass string
	allowed    bool
}

func (a plainAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !a.allowed && !server.TLS {
		return "", nil, errors.New("refusing to send the password over an unencrypted connection")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge")
	}
	return nil, nil
}
