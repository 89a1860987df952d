package sftpd

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestHashPassword(t *testing.T) {
	h, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$2") || strings.Contains(h, "s3cret") {
		t.Fatalf("not a bcrypt hash: %q", h)
	}
	cases := []struct {
		pw   string
		want bool
	}{{"s3cret", true}, {"s3cret ", false}, {"", false}, {"S3cret", false}}
	for _, c := range cases {
		if got := CheckPasswordHash(h, []byte(c.pw)); got != c.want {
			t.Errorf("CheckPasswordHash(%q) = %v", c.pw, got)
		}
	}
	if CheckPasswordHash("not a hash", []byte("s3cret")) {
		t.Error("garbage hash matched")
	}
}

func TestPasswordLogin(t *testing.T) {
	auth := newMapAuth()
	auth.setPassword(t, "acme", "correct horse")
	ts := startServer(t, auth)
	ts.srv.throttle.free = 100 // throttling is TestLoginThrottle's
	cases := []struct {
		name, user, password string
		ok                   bool
	}{
		{"right password", "acme", "correct horse", true},
		{"wrong password", "acme", "battery staple", false},
		{"unknown tenant", "initech", "correct horse", false},
		{"invalid user name", "../acme", "correct horse", false},
		{"empty password", "acme", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := ts.dialFrom("", c.user, ssh.Password(c.password))
			if !c.ok {
				if err == nil {
					conn.Close()
					t.Fatal("login succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// A working SFTP session.
			_, sc := ts.sftpClient(t, c.user, ssh.Password(c.password))
			names, err := sc.ReadDir("/")
			if err != nil || len(names) != 4 {
				t.Fatalf("ReadDir(/) = %v, %v", names, err)
			}
		})
	}
	if strings.Contains(ts.logs.String(), "correct horse") || strings.Contains(ts.logs.String(), "battery") {
		t.Error("a password appears in the log")
	}
}

// TestLoginThrottle: failures from one address slow that address's later
// attempts, growing and capped; the tenant is not locked out, and another
// address is not slowed at all.
func TestLoginThrottle(t *testing.T) {
	auth := newMapAuth()
	auth.setPassword(t, "acme", "right")
	ts := startServer(t, auth)
	th := ts.srv.throttle
	th.free, th.base, th.max, th.decay = 1, 100*time.Millisecond, 400*time.Millisecond, time.Hour

	// Expected wait before each attempt: the 1st failure is free, then 100,
	// 200, 400 (cap), 400 ms.
	want := []time.Duration{0, 0, 100, 200, 400, 400}
	var took []time.Duration
	for i, w := range want {
		w *= time.Millisecond
		if got := th.delay("127.0.0.1"); got != w {
			t.Errorf("attempt %d: delay %v, want %v", i+1, got, w)
		}
		start := time.Now()
		c, err := ts.dialFrom("127.0.0.1", "acme", ssh.Password("wrong"))
		took = append(took, time.Since(start))
		if err == nil {
			c.Close()
			t.Fatal("wrong password accepted")
		}
		if took[i] < w {
			t.Errorf("attempt %d took %v, less than its delay %v", i+1, took[i], w)
		}
	}
	if took[5]-took[0] < 300*time.Millisecond {
		t.Errorf("attempts did not slow down: %v", took)
	}

	// Another address is not affected (127.0.0.2 is loopback too on Linux).
	if d := th.delay("127.0.0.2"); d != 0 {
		t.Errorf("other address delayed %v", d)
	}
	if c, err := ts.dialFrom("127.0.0.2", "acme", ssh.Password("right")); err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			t.Logf("cannot dial from 127.0.0.2: %v", err)
		} else {
			t.Errorf("login from another address: %v", err)
		}
	} else {
		c.Close()
	}
	// The tenant is not locked out: the right password still works from the
	// throttled address, after its (capped) delay.
	start := time.Now()
	c, err := ts.dialFrom("127.0.0.1", "acme", ssh.Password("right"))
	if err != nil {
		t.Fatalf("right password after failures: %v", err)
	}
	c.Close()
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("throttled address not slowed: %v", d)
	}
}

// TestThrottleDecay checks the arithmetic with a fake clock.
func TestThrottleDecay(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	th := newThrottle()
	th.now = func() time.Time { return now }
	th.free, th.base, th.max, th.decay = 2, time.Second, 8*time.Second, time.Minute
	steps := []struct {
		advance time.Duration
		fails   int
		want    time.Duration
	}{
		{0, 0, 0},
		{0, 2, 0},                // free failures
		{0, 1, time.Second},      // 3 held
		{0, 1, 2 * time.Second},  // 4
		{0, 10, 8 * time.Second}, // capped
		{5 * time.Minute, 0, 8 * time.Second},
		{10 * time.Minute, 0, 0}, // all forgiven
		{0, 3, time.Second},      // counts restart from zero
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		for range s.fails {
			th.fail("10.0.0.1")
		}
		if got := th.delay("10.0.0.1"); got != s.want {
			t.Errorf("step %d: delay %v, want %v", i, got, s.want)
		}
		if got := th.delay("10.0.0.2"); got != 0 {
			t.Errorf("step %d: other address delayed %v", i, got)
		}
	}
	// wait honours the context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := th.wait(ctx, "10.0.0.1"); err == nil {
		t.Error("wait ignored a cancelled context")
	}
}

func TestAddrKey(t *testing.T) {
	cases := []struct{ addr, want string }{
		{"192.0.2.7:22", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:22", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:22", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:22", "2001:db8:1:2::/64"},
	}
	for _, c := range cases {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := addrKey(a); got != c.want {
			t.Errorf("addrKey(%s) = %s, want %s", c.addr, got, c.want)
		}
	}
}
