package sftpd

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"
)

// TestPasswordFlood: 200 wrong passwords from one address, over parallel
// connections with short client timeouts, as a brute-force script would
// send them. None gets in; the address ends up slowed to the cap; a right
// login from another address stays fast all along; and the tenant is not
// locked out: the right password from the slowed address still works, once
// its delay has passed. The throttle's timings are shortened to
// keep the test bounded (cap 500 ms); the logic is the production one.
func TestPasswordFlood(t *testing.T) {
	auth := newMapAuth()
	// A cheap hash: 200 bcrypt checks at the default cost would measure
	// the CPU, not the throttle.
	h, err := bcrypt.GenerateFromPassword([]byte("right-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	auth.passwords["acme"] = string(h)
	ts := startServer(t, auth, WithMaxConnsPerAddr(64))
	th := ts.srv.throttle
	th.free, th.base, th.max, th.decay = 3, 25*time.Millisecond, 500*time.Millisecond, time.Hour

	held := func(addr string) int { // failures held against addr
		th.mu.Lock()
		defer th.mu.Unlock()
		if e := th.entries[addr]; e != nil {
			return e.n
		}
		return 0
	}
	const attempts, parallel = 200, 40
	var accepted, refused, timedOut atomic.Int64
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	started := time.Now()
	for i := 0; i < attempts; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dialTimeout(ts, "127.0.0.1", "acme", "wrong-password", 2*time.Second)
			var ne net.Error
			switch {
			case err == nil:
				accepted.Add(1)
				c.Close()
			case errors.As(err, &ne) && ne.Timeout():
				timedOut.Add(1)
			default:
				refused.Add(1)
			}
		}()
		if i == attempts/2 {
			// Mid-flood, the tenant's own login from another address is
			// not slowed.
			if d, ok := rightLogin(t, ts, "127.0.0.2", 2*time.Second); ok && d > 500*time.Millisecond {
				t.Errorf("a right login from 127.0.0.2 during the flood took %s", d)
			}
		}
	}
	wg.Wait()
	t.Logf("%d wrong passwords in %s: %d refused, %d timed out, %d accepted; %d failures held against 127.0.0.1",
		attempts, time.Since(started).Round(time.Millisecond), refused.Load(), timedOut.Load(), accepted.Load(), held("127.0.0.1"))
	if accepted.Load() != 0 {
		t.Fatalf("%d wrong passwords accepted", accepted.Load())
	}
	// The attempts that reached the password check were all counted (the
	// others were turned away by the per-address cap or gave up waiting).
	if n := held("127.0.0.1"); n < attempts/2 {
		t.Errorf("only %d failures counted", n)
	}
	if d := th.delay("127.0.0.1"); d != th.max {
		t.Errorf("127.0.0.1's delay is %s, want the cap %s", d, th.max)
	}
	if d := th.delay("127.0.0.2"); d != 0 {
		t.Errorf("127.0.0.2 is delayed %s", d)
	}
	// The slowed address: a client that will not wait out the delay gets
	// nothing, whatever the password…
	if c, err := dialTimeout(ts, "127.0.0.1", "acme", "right-password", th.max/3); err == nil {
		c.Close()
		t.Error("a login from the slowed address was answered before its delay")
	}
	// …and the right password still works from it, after the delay.
	d, ok := rightLogin(t, ts, "127.0.0.1", 10*time.Second)
	if !ok {
		t.Fatal("the tenant is locked out of the slowed address")
	}
	if d < th.max {
		t.Errorf("the right login from the slowed address took %s, less than its delay %s", d, th.max)
	}
	// And other addresses, after the flood, as before.
	if d, ok := rightLogin(t, ts, "127.0.0.2", 2*time.Second); ok && d > 500*time.Millisecond {
		t.Errorf("a right login from 127.0.0.2 after the flood took %s", d)
	}
}

// dialTimeout logs in with a password, giving up after timeout.
func dialTimeout(ts *testServer, localIP, user, password string, timeout time.Duration) (*ssh.Client, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout)) //nolint:errcheck
	sc, chans, reqs, err := ssh.NewClientConn(c, ts.addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.FixedHostKey(ts.srv.signer.PublicKey()), Timeout: timeout})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{}) //nolint:errcheck
	return ssh.NewClient(sc, chans, reqs), nil
}

// rightLogin logs acme in with the right password from localIP and says how
// long it took; ok is false (logged, not failed) when the address cannot be
// dialled from at all.
func rightLogin(t *testing.T, ts *testServer, localIP string, timeout time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	c, err := dialTimeout(ts, localIP, "acme", "right-password", timeout)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			t.Logf("cannot dial from %s: %v", localIP, err)
			return 0, false
		}
		t.Errorf("right login from %s: %v", localIP, err)
		return 0, false
	}
	c.Close()
	return time.Since(start), true
}

// TestIdleBeforeLogin: a connection that opens TCP and never speaks SSH is
// closed by the idle timeout, not held until the handshake's bound.
func TestIdleBeforeLogin(t *testing.T) {
	ts := startServer(t, newMapAuth(), WithIdleTimeout(300*time.Millisecond))
	raw, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetReadDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	buf := make([]byte, 256)
	start := time.Now()
	for {
		if _, err := raw.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the silent connection was not closed")
			}
			break // closed by the server
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %s", d)
	}
}

// TestCheckNameLookAlikes: bidirectional controls, which make a name show
// as another, are refused like other control characters; look-alike
// letters are only letters, and stay allowed (the name is shown as is).
func TestCheckNameLookAlikes(t *testing.T) {
	for _, name := range []string{"users.csv\u202e", "users\u202evsc.exe", "\u2066users.csv", "users\u200f.csv", "users\u061c.csv", "a\nb.csv", "a\u0085b.csv"} {
		if err := checkName(name); !errors.Is(err, errBadName) {
			t.Errorf("checkName(%q) = %v, want refused", name, err)
		}
	}
	for _, name := range []string{"ｕsers.csv", "usеrs.csv", "users．csv", "ᴜsers.csv", "équipe été.csv", "用户.csv"} {
		if err := checkName(name); err != nil {
			t.Errorf("checkName(%q) = %v, want allowed", name, err)
		}
	}
}
