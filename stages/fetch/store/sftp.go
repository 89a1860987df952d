package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/roster-hr/roster/pipeline"
)

// SFTPConfig configures a connection to a customer's SFTP server.
type SFTPConfig struct {
	// Addr is host:port; the port defaults to 22.
	Addr string
	User string

	// KeyFile is a private key in OpenSSH or PEM format, encrypted with
	// KeyPassphrase if that is set. Password is tried too (password and
	// keyboard-interactive) when set. At least one is required.
	KeyFile       string
	KeyPassphrase string
	Password      string

	// Host key verification is mandatory: KnownHostsFile (OpenSSH format;
	// a non-22 port is written "[host]:port") or HostKeyFingerprint, the
	// server key's "SHA256:..." fingerprint as printed by ssh-keygen -l.
	// When both are set, the key must pass both.
	KnownHostsFile     string
	HostKeyFingerprint string

	// Root is the remote folder holding incoming/, processed/, failed/ and
	// reports/: relative to the login folder, which is the default ("").
	Root string

	// StableAfter makes List itself wait for the second poll.
	//
	// A data file without a done marker is complete once two polls saw the
	// same size and mtime, and that size and mtime were first seen at
	// least StableAfter ago. With StableAfter == 0 List never waits: a file
	// first seen by this List is left for a later one, so a long-running
	// process (roster serve) takes it at its next poll. A one-shot process
	// (roster run) has no next poll: it needs markers, or StableAfter > 0,
	// with which a List that finds such unconfirmed files waits StableAfter
	// once (ctx permitting) and polls again, listing those unchanged.
	StableAfter time.Duration

	// PollState remembers what earlier polls saw. Polls share it when they
	// share one *SFTP; set it to share it across connections too (a new
	// DialSFTP per scheduled run). Nil means a fresh one for this *SFTP.
	PollState *PollState

	// Timeout bounds connecting (TCP and SSH handshake) and a keepalive's
	// reply on an open connection. Default 30s.
	Timeout time.Duration
}

const (
	defaultTimeout = 30 * time.Second
	keepaliveEvery = 15 * time.Second
)

// PollState is what earlier polls saw of files without a done marker, keyed
// by server, user and path. It is safe for concurrent use.
type PollState struct {
	mu   sync.Mutex
	poll uint64
	seen map[string]observation
}

// NewPollState returns an empty PollState.
func NewPollState() *PollState { return &PollState{seen: map[string]observation{}} }

type observation struct {
	size  int64
	mtime time.Time
	since time.Time // when this size and mtime were first seen
	poll  uint64    // the poll that first saw them
}

// observe records one poll of the folder dirKey (its data files, and
// whether each has a marker) and returns the complete ones and the number
// left pending. Files gone from the folder are forgotten.
func (ps *PollState) observe(dirKey string, data []fs.FileInfo, marked func(string) bool, now time.Time, minAge time.Duration) (files []pipeline.RemoteFile, pending int) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.poll++
	cur := ps.poll
	prefix := dirKey + "/"
	present := make(map[string]bool, len(data))
	for _, info := range data {
		name := info.Name()
		key := prefix + name
		present[key] = true
		size, mtime := info.Size(), info.ModTime()
		o, ok := ps.seen[key]
		if !ok || o.size != size || !o.mtime.Equal(mtime) {
			o = observation{size: size, mtime: mtime, since: now, poll: cur}
			ps.seen[key] = o
		}
		stable := o.poll < cur && now.Sub(o.since) >= minAge
		if !stable && !marked(name) {
			pending++
			continue
		}
		files = append(files, pipeline.RemoteFile{Name: name, Size: size, ModTime: mtime})
	}
	for key := range ps.seen {
		if rest, ok := strings.CutPrefix(key, prefix); ok && !strings.Contains(rest, "/") && !present[key] {
			delete(ps.seen, key)
		}
	}
	return files, pending
}

// SFTP is a connection to a customer's SFTP server. It is a pipeline.Store
// for the tenant at SFTPConfig.Root; Tenant gives others on the same
// server. After a network failure the next call reconnects. It is safe for
// concurrent use. Close it when done.
type SFTP struct {
	cfg   SFTPConfig
	addr  string
	ssh   *ssh.ClientConfig
	state *PollState
	id    string // user@addr, prefix of PollState keys

	noPosixRename bool // tests: exercise the remove-then-rename path

	mu     sync.Mutex
	cur    *conn
	closed bool

	def sftpTenant
}

var _ pipeline.Store = (*SFTP)(nil)

// conn is one SSH connection with its SFTP session.
type conn struct {
	ssh      *ssh.Client
	sftp     *sftp.Client
	dead     chan struct{} // closed once the connection is known broken
	deadOnce sync.Once
}

func (c *conn) markDead() { c.deadOnce.Do(func() { close(c.dead) }) }

// kill marks the connection dead and closes it.
func (c *conn) kill() {
	c.markDead()
	c.sftp.Close()
	c.ssh.Close()
}

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// DialSFTP checks cfg, connects and starts an SFTP session, so that a bad
// address, credential or host key fails here.
func DialSFTP(ctx context.Context, cfg SFTPConfig) (*SFTP, error) {
	if cfg.Addr == "" || cfg.User == "" {
		return nil, errors.New("store: sftp: Addr and User are required")
	}
	addr := cfg.Addr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "22")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	hostKey, algos, err := hostKeyCallback(cfg, addr)
	if err != nil {
		return nil, err
	}
	auth, err := authMethods(cfg)
	if err != nil {
		return nil, err
	}
	s := &SFTP{
		cfg:   cfg,
		addr:  addr,
		state: cfg.PollState,
		id:    cfg.User + "@" + addr,
		ssh: &ssh.ClientConfig{
			User:              cfg.User,
			Auth:              auth,
			HostKeyCallback:   hostKey,
			HostKeyAlgorithms: algos,
			Timeout:           cfg.Timeout,
			Config: ssh.Config{
				// AES-GCM first: hardware-accelerated and an AEAD (no
				// separate MAC pass), then the other AEAD, then CTR for
				// old servers.
				Ciphers: []string{
					ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
					ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR,
				},
			},
		},
	}
	if s.state == nil {
		s.state = NewPollState()
	}
	s.def = sftpTenant{s: s, root: cfg.Root}
	if _, err := s.client(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func authMethods(cfg SFTPConfig) ([]ssh.AuthMethod, error) {
	var auth []ssh.AuthMethod
	if cfg.KeyFile != "" {
		pem, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store: sftp: read key file: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing) && cfg.KeyPassphrase == "":
			return nil, fmt.Errorf("store: sftp: key file %s is encrypted: set its passphrase", cfg.KeyFile)
		case errors.As(err, &missing):
			signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(cfg.KeyPassphrase))
			if err != nil {
				return nil, fmt.Errorf("store: sftp: key file %s: wrong passphrase or unreadable key: %w", cfg.KeyFile, err)
			}
		case err != nil:
			return nil, fmt.Errorf("store: sftp: key file %s: %w", cfg.KeyFile, err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if cfg.Password != "" {
		pw := cfg.Password
		auth = append(auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range questions {
					if !echos[i] { // a secret prompt: the password
						answers[i] = pw
					}
				}
				return answers, nil
			}))
	}
	if len(auth) == 0 {
		return nil, errors.New("store: sftp: set KeyFile or Password")
	}
	return auth, nil
}

// Tenant returns the store whose incoming/ etc. are in root: absolute, or
// relative to SFTPConfig.Root. It shares the connection and poll state.
func (s *SFTP) Tenant(root string) pipeline.Store {
	if !path.IsAbs(root) {
		root = path.Join(s.cfg.Root, root)
	}
	return &sftpTenant{s: s, root: root}
}

// List returns the complete uploads in incoming/: see SFTPConfig.StableAfter.
func (s *SFTP) List(ctx context.Context) ([]pipeline.RemoteFile, error) {
	return s.def.List(ctx)
}

// Fetch copies incoming/name to w with concurrent reads.
func (s *SFTP) Fetch(ctx context.Context, name string, w io.Writer) (int64, error) {
	return s.def.Fetch(ctx, name, w)
}

// Finish moves incoming/name and its markers to processed/ or failed/.
func (s *SFTP) Finish(ctx context.Context, name string, ok bool) error {
	return s.def.Finish(ctx, name, ok)
}

// PutReport writes reports/name through a temporary file and a rename.
func (s *SFTP) PutReport(ctx context.Context, name string, body []byte) error {
	return s.def.PutReport(ctx, name, body)
}

// Close closes the connection. Later calls fail.
func (s *SFTP) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.cur != nil {
		s.cur.kill()
		s.cur = nil
	}
	return nil
}

// client returns the open connection, reconnecting if it died.
func (s *SFTP) client(ctx context.Context) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.cur != nil {
		if !s.cur.isDead() {
			return s.cur, nil
		}
		s.cur.kill()
		s.cur = nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.cur = c
	return c, nil
}

func (s *SFTP) dial(ctx context.Context) (*conn, error) {
	d := net.Dialer{Timeout: s.cfg.Timeout}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("store: sftp: connect to %s: %w", s.addr, err)
	}
	// The handshake and the SFTP session start are bounded by Timeout and
	// by ctx; afterwards the keepalive watches the connection.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(s.cfg.Timeout))
	c, err := s.handshake(nc)
	if !stop() {
		if c != nil {
			c.kill()
		}
		nc.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go func() {
		c.ssh.Wait()
		c.markDead()
	}()
	go c.keepalive(s.cfg.Timeout)
	return c, nil
}

// readPacket is the SFTP read size; ROSTER_SFTP_PACKET overrides it for
// servers that misbehave with large packets.
func readPacket() int {
	if v, err := strconv.Atoi(os.Getenv("ROSTER_SFTP_PACKET")); err == nil && v >= 1024 {
		return v
	}
	return 255 * 1024
}

func (s *SFTP) handshake(nc net.Conn) (*conn, error) {
	sc, chans, reqs, err := ssh.NewClientConn(nc, s.addr, s.ssh)
	if err != nil {
		return nil, fmt.Errorf("store: sftp: %s: %w", s.addr, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	cl, err := sftp.NewClient(client,
		sftp.UseConcurrentReads(true),
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(64),
		// OpenSSH's sftp-server answers reads of up to 255 KiB (its
		// limits@openssh.com extension); pkg/sftp defaults to 32 KiB, which
		// costs throughput on fast links. Servers that cap reads lower just
		// return shorter reads, which pkg/sftp handles.
		sftp.MaxPacketUnchecked(readPacket()),
	)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("store: sftp: %s: start the sftp subsystem: %w", s.addr, err)
	}
	return &conn{ssh: client, sftp: cl, dead: make(chan struct{})}, nil
}

// keepalive closes the connection when the server stops answering, so that
// calls blocked on it fail instead of hanging. It ends with the connection.
func (c *conn) keepalive(timeout time.Duration) {
	tick := time.NewTicker(keepaliveEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		timer := time.NewTimer(timeout)
		select {
		case err := <-reply:
			timer.Stop()
			if err != nil {
				c.kill()
				return
			}
		case <-timer.C:
			c.kill()
			return
		case <-c.dead:
			timer.Stop()
			return
		}
	}
}

// fail closes c when err says the connection is broken, so that the next
// call reconnects, and returns err.
func (s *SFTP) fail(c *conn, err error) error {
	if c.isDead() || isConnError(err) {
		c.kill()
		if !errors.Is(err, ErrConnection) {
			err = fmt.Errorf("%w (%w)", err, ErrConnection)
		}
	}
	return err
}

// rename renames old to new, replacing new: with posix-rename@openssh.com
// where the server has it, else (a plain SFTP rename fails on an existing
// target) by removing new and renaming again.
func (s *SFTP) rename(c *conn, old, new string) error {
	if _, ok := c.sftp.HasExtension("posix-rename@openssh.com"); ok && !s.noPosixRename {
		return c.sftp.PosixRename(old, new)
	}
	err := c.sftp.Rename(old, new)
	if err == nil {
		return nil
	}
	if _, serr := c.sftp.Lstat(old); serr != nil {
		return err // nothing to move: new stays as it was
	}
	if rerr := c.sftp.Remove(new); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return err
	}
	return c.sftp.Rename(old, new)
}

// sftpTenant is one tenant home on the server.
type sftpTenant struct {
	s    *SFTP
	root string
}

func (t *sftpTenant) p(elem ...string) string {
	return path.Join(append([]string{t.root}, elem...)...)
}

func (t *sftpTenant) List(ctx context.Context) ([]pipeline.RemoteFile, error) {
	files, pending, err := t.poll(ctx)
	if err != nil || pending == 0 || t.s.cfg.StableAfter <= 0 {
		return files, err
	}
	timer := time.NewTimer(t.s.cfg.StableAfter)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
	}
	files, _, err = t.poll(ctx)
	return files, err
}

// poll lists incoming/ once and records what it saw.
func (t *sftpTenant) poll(ctx context.Context) ([]pipeline.RemoteFile, int, error) {
	c, err := t.s.client(ctx)
	if err != nil {
		return nil, 0, err
	}
	dir := t.p(dirIncoming)
	infos, err := c.sftp.ReadDirContext(ctx, dir)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, t.s.fail(c, fmt.Errorf("store: sftp: list %s: %w", dir, err))
	}
	present := make(map[string]bool, len(infos))
	var data []fs.FileInfo
	for _, info := range infos {
		// OpenSSH's readdir reports lstat attributes: links are not regular.
		name := info.Name()
		if !listable(name) || !info.Mode().IsRegular() {
			continue
		}
		present[name] = true
		if !IsMarker(name) {
			data = append(data, info)
		}
	}
	marked := func(name string) bool {
		for _, m := range MarkerNames(name) {
			if present[m] {
				return true
			}
		}
		return false
	}
	files, pending := t.s.state.observe(t.s.id+":"+dir, data, marked, time.Now(), t.s.cfg.StableAfter)
	sortFiles(files)
	return files, pending, nil
}

func (t *sftpTenant) Fetch(ctx context.Context, name string, w io.Writer) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	c, err := t.s.client(ctx)
	if err != nil {
		return 0, err
	}
	p := t.p(dirIncoming, name)
	st, err := c.sftp.Lstat(p)
	if err != nil {
		return 0, t.s.fail(c, fmt.Errorf("store: sftp: fetch %s: %w", p, err))
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("store: sftp: fetch %s: not a regular file", p)
	}
	f, err := c.sftp.Open(p)
	if err != nil {
		return 0, t.s.fail(c, fmt.Errorf("store: sftp: fetch %s: %w", p, err))
	}
	defer f.Close()
	// WriteTo on the bare *sftp.File keeps up to 64 reads in flight; any
	// wrapping of the file (not of w) would degrade to one 32 KiB read per
	// round trip.
	n, err := f.WriteTo(ctxWriter{ctx, w})
	if err != nil {
		if ctx.Err() != nil {
			return n, fmt.Errorf("store: sftp: fetch %s: %w", p, ctx.Err())
		}
		return n, t.s.fail(c, fmt.Errorf("store: sftp: fetch %s: %w", p, err))
	}
	return n, nil
}

func (t *sftpTenant) Finish(ctx context.Context, name string, ok bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	c, err := t.s.client(ctx)
	if err != nil {
		return err
	}
	src, dst := t.p(dirIncoming), t.p(finishDir(ok))
	if _, err := c.sftp.Lstat(path.Join(src, name)); err != nil {
		return t.s.fail(c, fmt.Errorf("store: sftp: finish %s: %w", path.Join(src, name), err))
	}
	if err := c.sftp.MkdirAll(dst); err != nil {
		return t.s.fail(c, fmt.Errorf("store: sftp: finish: create %s: %w", dst, err))
	}
	// Markers first, as in Local.Finish.
	for _, m := range MarkerNames(name) {
		if _, err := c.sftp.Lstat(path.Join(src, m)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := t.s.rename(c, path.Join(src, m), path.Join(dst, m)); err != nil {
			return t.s.fail(c, fmt.Errorf("store: sftp: finish: move marker %s: %w", m, err))
		}
	}
	if err := t.s.rename(c, path.Join(src, name), path.Join(dst, name)); err != nil {
		return t.s.fail(c, fmt.Errorf("store: sftp: finish %s: %w", name, err))
	}
	return nil
}

func (t *sftpTenant) PutReport(ctx context.Context, name string, body []byte) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	c, err := t.s.client(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = t.s.fail(c, fmt.Errorf("store: sftp: put report %s: %w", name, err))
		}
	}()
	dir := t.p(dirReports)
	if err := c.sftp.MkdirAll(dir); err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(dir, ".roster-"+hex.EncodeToString(rnd[:])+".tmp")
	f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && !c.isDead() {
			c.sftp.Remove(tmp)
		}
	}()
	if _, err := f.ReadFrom(bytes.NewReader(body)); err != nil {
		f.Close()
		return err
	}
	// Best effort: some servers refuse SETSTAT, and the report is no less
	// complete without its mode.
	_ = f.Chmod(reportPerm)
	if err := f.Close(); err != nil {
		return err
	}
	return t.s.rename(c, tmp, path.Join(dir, name))
}
