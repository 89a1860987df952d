package sftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Server is the multi-tenant SFTP server. Create it with New.
type Server struct {
	root        string // absolute; holds one home per tenant
	auth        Authenticator
	log         *slog.Logger
	hostKeyFile string
	signer      ssh.Signer

	maxUpload     int64
	idleTimeout   time.Duration
	maxPerTenant  int
	maxPerAddr    int
	onUpload      func(tenant, name string)
	handshakeTime time.Duration // bound on key exchange + authentication
	throttle      *throttle

	mu        sync.Mutex
	perTenant map[string]int
	perAddr   map[string]int
}

// An Option configures a Server.
type Option func(*Server) error

const (
	defaultMaxUpload   = 1 << 30
	defaultIdleTimeout = 10 * time.Minute
	// maxSessionsPerConn bounds session channels on one connection, or the
	// per-tenant connection limit would mean little.
	maxSessionsPerConn = 4
)

// WithHostKeyFile sets where the ed25519 host key is kept. The default is
// filepath.Join(filepath.Dir(root), "ssh_host_ed25519_key"): beside the
// homes, never inside root, where a tenant's home could be named after it.
func WithHostKeyFile(path string) Option {
	return func(s *Server) error {
		if path == "" {
			return errors.New("sftpd: WithHostKeyFile: empty path")
		}
		s.hostKeyFile = path
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()). Passwords and keys
// are never logged; public key fingerprints are.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		s.log = l
		return nil
	}
}

// WithMaxUploadSize limits the size of one uploaded file (default 1 GiB).
// It is enforced while writing: the first write past it fails with a clear
// error and the partial upload is discarded.
func WithMaxUploadSize(n int64) Option {
	return func(s *Server) error {
		if n <= 0 {
			return fmt.Errorf("sftpd: WithMaxUploadSize: %d is not positive", n)
		}
		s.maxUpload = n
		return nil
	}
}

// WithIdleTimeout closes connections that carried no traffic for d
// (default 10 minutes). An upload in progress on such a connection is
// discarded.
func WithIdleTimeout(d time.Duration) Option {
	return func(s *Server) error {
		if d <= 0 {
			return fmt.Errorf("sftpd: WithIdleTimeout: %v is not positive", d)
		}
		s.idleTimeout = d
		return nil
	}
}

// WithMaxConnsPerTenant limits simultaneous logged-in connections of one
// tenant (default 8). Beyond it the client's session is refused with a
// message.
func WithMaxConnsPerTenant(n int) Option {
	return func(s *Server) error {
		if n <= 0 {
			return fmt.Errorf("sftpd: WithMaxConnsPerTenant: %d is not positive", n)
		}
		s.maxPerTenant = n
		return nil
	}
}

// WithMaxConnsPerAddr limits simultaneous connections, logged in or not,
// from one IP address (one /64 for IPv6; default 16). Beyond it new
// connections are closed at once.
func WithMaxConnsPerAddr(n int) Option {
	return func(s *Server) error {
		if n <= 0 {
			return fmt.Errorf("sftpd: WithMaxConnsPerAddr: %d is not positive", n)
		}
		s.maxPerAddr = n
		return nil
	}
}

// WithOnUpload sets a function called after an upload completed, when the
// file is visible in incoming/ under name (also after a client renamed a
// file within /incoming). It runs on the client's request and delays the
// client's reply, so it should return quickly (hand off, don't process).
func WithOnUpload(f func(tenant, name string)) Option {
	return func(s *Server) error {
		s.onUpload = f
		return nil
	}
}

// New returns a server for the tenant homes under root, creating root if
// needed, and loads the SSH host key or generates and stores one.
func New(root string, auth Authenticator, opts ...Option) (*Server, error) {
	if root == "" {
		return nil, errors.New("sftpd: empty root")
	}
	if auth == nil {
		return nil, errors.New("sftpd: nil Authenticator")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("sftpd: root: %w", err)
	}
	s := &Server{
		root:          abs,
		auth:          auth,
		log:           slog.Default(),
		hostKeyFile:   filepath.Join(filepath.Dir(abs), "ssh_host_ed25519_key"),
		maxUpload:     defaultMaxUpload,
		idleTimeout:   defaultIdleTimeout,
		maxPerTenant:  8,
		maxPerAddr:    16,
		handshakeTime: 2 * time.Minute,
		throttle:      newThrottle(),
		perTenant:     map[string]int{},
		perAddr:       map[string]int{},
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(s.root, 0o750); err != nil {
		return nil, fmt.Errorf("sftpd: root: %w", err)
	}
	if s.signer, err = loadOrCreateHostKey(s.hostKeyFile, s.log); err != nil {
		return nil, err
	}
	return s, nil
}

// HostKeyFingerprint is the host key's SHA256 fingerprint as OpenSSH prints
// it ("SHA256:..."), for operators to publish to customers.
func (s *Server) HostKeyFingerprint() string { return ssh.FingerprintSHA256(s.signer.PublicKey()) }

func (s *Server) homeDir(tenant string) string { return filepath.Join(s.root, tenant) }

func (s *Server) uploaded(tenant, name string) {
	if s.onUpload != nil {
		s.onUpload(tenant, name)
	}
}

// Serve accepts SSH connections on ln until ctx is done, then closes ln and
// every connection it accepted (uploads in progress are discarded), waits
// for their handlers and returns nil. If ln fails otherwise, Serve closes
// its connections the same way and returns the error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns connSet
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		conns.closeAll()
	})
	defer stop()

	s.log.Info("sftp server listening", "addr", ln.Addr().String(), "host_key", s.HostKeyFingerprint())
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				cancel()
				return err
			}
			// Out of file descriptors and the like: wait and go on.
			s.log.Error("accept", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !conns.add(c) {
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			s.handleConn(ctx, c)
		}()
	}
}

// connSet tracks the connections of one Serve call so shutdown can close
// them.
type connSet struct {
	mu     sync.Mutex
	closed bool
	m      map[net.Conn]struct{}
}

func (cs *connSet) add(c net.Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	if cs.m == nil {
		cs.m = map[net.Conn]struct{}{}
	}
	cs.m[c] = struct{}{}
	return true
}

func (cs *connSet) remove(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, c)
}

func (cs *connSet) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for c := range cs.m {
		c.Close()
	}
}

// acquire takes one of n slots for key in m.
func (s *Server) acquire(m map[string]int, key string, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m[key] >= n {
		return false
	}
	m[key]++
	return true
}

func (s *Server) release(m map[string]int, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m[key]--; m[key] <= 0 {
		delete(m, key)
	}
}

func (s *Server) handleConn(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	remote := raw.RemoteAddr().String()
	addr := addrKey(raw.RemoteAddr())
	if !s.acquire(s.perAddr, addr, s.maxPerAddr) {
		s.log.Warn("connection refused: too many connections from address", "remote", remote, "limit", s.maxPerAddr)
		return
	}
	defer s.release(s.perAddr, addr)

	conn := newIdleConn(raw, s.idleTimeout)
	conn.setHardDeadline(time.Now().Add(s.handshakeTime))
	sconn, chans, reqs, err := ssh.NewServerConn(conn, s.serverConfig(ctx))
	if err != nil {
		s.log.Info("ssh handshake failed", "remote", remote, "err", err)
		return
	}
	defer sconn.Close()
	conn.setHardDeadline(time.Time{})
	// Global requests (tcpip-forward and the like) are all refused.
	go ssh.DiscardRequests(reqs)

	tenant := sconn.User() // authenticated: the callbacks accept valid tenant IDs only
	log := s.log.With("tenant", tenant, "remote", remote)
	var perms ssh.Permissions
	if sconn.Permissions != nil {
		perms = *sconn.Permissions
	}
	loginAttrs := []any{"action", "login", "method", perms.Extensions["method"]}
	if fp := perms.Extensions["key"]; fp != "" {
		loginAttrs = append(loginAttrs, "key", fp)
	}
	log.Info("login", loginAttrs...)
	defer log.Info("logout", "action", "logout")

	if !s.acquire(s.perTenant, tenant, s.maxPerTenant) {
		log.Warn("session refused: too many connections for tenant", "limit", s.maxPerTenant)
		rejectFirst(chans, ssh.ResourceShortage,
			fmt.Sprintf("roster: too many connections for %s (limit %d); close one and retry", tenant, s.maxPerTenant))
		return
	}
	defer s.release(s.perTenant, tenant)
	if err := s.EnsureHome(tenant); err != nil {
		log.Error("session refused: home unusable", "err", err)
		rejectFirst(chans, ssh.ConnectionFailed, "roster: your folders are not available; contact support")
		return
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	var sessions atomic.Int32
	for nc := range chans {
		if nc.ChannelType() != "session" {
			log.Info("refused", "action", "channel", "type", nc.ChannelType())
			nc.Reject(ssh.Prohibited, "roster: only SFTP is available; forwarding is not")
			continue
		}
		if sessions.Load() >= maxSessionsPerConn {
			nc.Reject(ssh.ResourceShortage, "roster: too many sessions on one connection")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		sessions.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sessions.Add(-1)
			s.handleSession(tenant, log, ch, creqs)
		}()
	}
}

// rejectFirst rejects the client's first channel with a message it will
// show, so the client learns why instead of seeing the connection drop.
func rejectFirst(chans <-chan ssh.NewChannel, reason ssh.RejectionReason, msg string) {
	select {
	case nc, ok := <-chans:
		if ok {
			nc.Reject(reason, msg)
		}
	case <-time.After(10 * time.Second):
	}
}

// refusalMessage is written to stderr of shell and exec requests, which is
// also how legacy scp (`scp -O`, an exec of "scp -t") is told.
const refusalMessage = "roster: this server only speaks SFTP; shell, exec and scp are not available - use an SFTP client (sftp, FileZilla, WinSCP)\n"

// handleSession serves one session channel: the "sftp" subsystem, and
// nothing else.
func (s *Server) handleSession(tenant string, log *slog.Logger, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var sftpDone chan struct{}
	for req := range reqs {
		switch req.Type {
		case "subsystem":
			var p struct{ Name string }
			if sftpDone != nil || ssh.Unmarshal(req.Payload, &p) != nil || p.Name != "sftp" {
				log.Info("refused", "action", "subsystem", "name", p.Name)
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			sftpDone = make(chan struct{})
			go func() {
				defer close(sftpDone)
				s.serveSFTP(tenant, log, ch)
				// Closing the channel ends the request loop.
				ch.Close()
			}()
		case "exec", "shell":
			if sftpDone != nil {
				req.Reply(false, nil)
				continue
			}
			action := req.Type
			var p struct{ Command string }
			if req.Type == "exec" && ssh.Unmarshal(req.Payload, &p) == nil &&
				(p.Command == "scp" || strings.HasPrefix(p.Command, "scp ")) {
				action = "scp"
			}
			// The command itself is not logged: it may carry anything.
			log.Info("refused", "action", action)
			// Accept, then explain on stderr and exit 1: a plain refusal only
			// makes clients print "exec request failed", which tells the
			// customer nothing.
			req.Reply(true, nil)
			io.WriteString(ch.Stderr(), refusalMessage)
			ch.CloseWrite()
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{1}))
			go ssh.DiscardRequests(reqs) // requests must be serviced until the channel is gone
			return
		default:
			// pty-req, env, x11-req, auth-agent-req@openssh.com, signal...
			req.Reply(false, nil)
		}
	}
	if sftpDone != nil {
		<-sftpDone
	}
}

func (s *Server) serveSFTP(tenant string, log *slog.Logger, ch ssh.Channel) {
	ss, err := s.newSession(tenant, log)
	if err != nil {
		log.Error("sftp session", "err", err)
		return
	}
	defer ss.close()
	h := sftp.Handlers{FileGet: ss, FilePut: ss, FileCmd: ss, FileList: ss}
	rs := sftp.NewRequestServer(ch, h)
	// Serve closes every handle it still has (discarding open uploads)
	// before returning.
	if err := rs.Serve(); err != nil && !errors.Is(err, io.EOF) {
		log.Debug("sftp session ended", "err", err)
	}
	// The exit status before the channel closes (the caller closes it):
	// OpenSSH's scp, in SFTP mode, fails a transfer whose session ends
	// without one.
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
}
