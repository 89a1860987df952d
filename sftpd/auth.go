package sftpd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"
)

// Authenticator is how the server checks logins; the tenant store
// (PostgreSQL) implements it elsewhere. The user is the tenant ID; the
// server only asks about syntactically valid tenant IDs.
type Authenticator interface {
	// CheckPassword reports whether password is the tenant's SFTP password.
	// Unknown users return false, nil. (An implementation should spend about
	// as long on an unknown user as on a wrong password — compare against a
	// dummy hash — so timing does not reveal which tenants exist.)
	CheckPassword(ctx context.Context, user string, password []byte) (bool, error)
	// AuthorizedKeys returns the tenant's authorised public keys (none for
	// unknown users).
	AuthorizedKeys(ctx context.Context, user string) ([]ssh.PublicKey, error)
}

// HashPassword returns the bcrypt hash (default cost) roster stores for an
// SFTP password. bcrypt refuses passwords longer than 72 bytes.
func HashPassword(password []byte) (string, error) {
	h, err := bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("sftpd: hash password: %w", err)
	}
	return string(h), nil
}

// CheckPasswordHash reports whether password matches a hash made by
// HashPassword. It is slow on purpose.
func CheckPasswordHash(hash string, password []byte) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), password) == nil
}

// authTimeout bounds one call into the Authenticator.
const authTimeout = 10 * time.Second

func (s *Server) serverConfig(ctx context.Context) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-roster",
		MaxAuthTries:  6,
		PasswordCallback: func(cm ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
			return s.checkPassword(ctx, cm, password)
		},
		PublicKeyCallback: func(cm ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			return s.checkKey(ctx, cm, key)
		},
	}
	cfg.AddHostKey(s.signer)
	return cfg
}

func (s *Server) checkPassword(ctx context.Context, cm ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	ip := addrKey(cm.RemoteAddr())
	// Wait before checking, whatever the outcome: the delay must cost an
	// attacker every guess, and must not tell a right guess from a wrong one.
	if err := s.throttle.wait(ctx, ip); err != nil {
		return nil, err
	}
	user := cm.User()
	log := s.log.With("tenant", user, "remote", cm.RemoteAddr().String(), "action", "login", "method", "password")
	if !validTenant(user) {
		n := s.throttle.fail(ip)
		log.Info("login failed", "reason", "invalid user name", "failures", n)
		return nil, errAuthLogin
	}
	actx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	ok, err := s.auth.CheckPassword(actx, user, password)
	if err != nil {
		// A store outage is not the client's fault: not counted.
		log.Error("login failed", "reason", "authenticator error", "err", err)
		return nil, errAuthLogin
	}
	if !ok {
		n := s.throttle.fail(ip)
		log.Info("login failed", "reason", "wrong password or unknown tenant", "failures", n)
		return nil, errAuthLogin
	}
	return &ssh.Permissions{Extensions: map[string]string{"method": "password"}}, nil
}

// checkKey accepts a key listed for the tenant. Offered keys that do not
// match are not counted as failures: clients routinely offer several keys
// before the right one, and keys cannot be guessed.
func (s *Server) checkKey(ctx context.Context, cm ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	user := cm.User()
	if !validTenant(user) {
		return nil, errAuthLogin
	}
	actx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	keys, err := s.auth.AuthorizedKeys(actx, user)
	if err != nil {
		s.log.Error("login failed", "tenant", user, "remote", cm.RemoteAddr().String(), "action", "login",
			"method", "publickey", "reason", "authenticator error", "err", err)
		return nil, errAuthLogin
	}
	offered := key.Marshal()
	for _, k := range keys {
		if k != nil && bytes.Equal(k.Marshal(), offered) {
			// The fingerprint (a hash of the public key) is logged on login
			// so operators can tell which of a tenant's keys was used.
			return &ssh.Permissions{Extensions: map[string]string{
				"method": "publickey", "key": ssh.FingerprintSHA256(key),
			}}, nil
		}
	}
	return nil, errAuthLogin
}

// addrKey is the throttling and per-address key of a remote address: the
// IP, or its /64 for IPv6, since one IPv6 host usually owns a whole /64.
func addrKey(a net.Addr) string {
	host := a.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// throttle slows password logins from an address after failures: while
// at most `free` failures are held against it nothing happens, then each
// attempt waits base, 2*base, 4*base, ... up to max. One failure is forgiven per `decay` without
// new failures, so a mistyping customer is soon back to normal. State is per
// address: other addresses, and the tenant, are never locked out.
type throttle struct {
	free  int
	base  time.Duration
	max   time.Duration
	decay time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

// maxThrottleEntries bounds the map; beyond it, entries that have decayed
// to zero are swept.
const maxThrottleEntries = 10000

func newThrottle() *throttle {
	return &throttle{
		free:    3,
		base:    500 * time.Millisecond,
		max:     8 * time.Second,
		decay:   time.Minute,
		now:     time.Now,
		entries: map[string]*failures{},
	}
}

// count is the number of failures of e still held against it at now.
func (t *throttle) count(e *failures, now time.Time) int {
	n := e.n - int(now.Sub(e.last)/t.decay)
	return max(n, 0)
}

// delay is how long the next attempt from key must wait.
func (t *throttle) delay(key string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e == nil {
		return 0
	}
	n := t.count(e, t.now()) - t.free - 1
	if n < 0 {
		return 0
	}
	d := t.base
	for i := 0; i < n && d < t.max; i++ {
		d *= 2
	}
	return min(d, t.max)
}

// fail records a failure from key and returns the failures now held
// against it.
func (t *throttle) fail(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	e := t.entries[key]
	if e == nil {
		if len(t.entries) >= maxThrottleEntries {
			for k, old := range t.entries {
				if t.count(old, now) == 0 {
					delete(t.entries, k)
				}
			}
		}
		e = &failures{}
		t.entries[key] = e
	}
	e.n = t.count(e, now) + 1
	e.last = now
	return e.n
}

// wait sleeps for key's delay, or until ctx is done.
func (t *throttle) wait(ctx context.Context, key string) error {
	d := t.delay(key)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
