package sftpd

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// idleConn closes a connection that has carried no traffic, either way, for
// the idle timeout. Deadlines are derived from the last activity rather than
// pushed forward on every call, and a read that times out while writes kept
// the connection busy (a long download) just waits again.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte read or written
	hard atomic.Int64 // an absolute deadline (the handshake's), 0 for none
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	ic := &idleConn{Conn: c, idle: idle}
	ic.touch()
	return ic
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

// setHardDeadline bounds the connection absolutely (zero removes the bound).
func (c *idleConn) setHardDeadline(t time.Time) {
	if t.IsZero() {
		c.hard.Store(0)
		return
	}
	c.hard.Store(t.UnixNano())
}

func (c *idleConn) deadline() time.Time {
	d := time.Unix(0, c.last.Load()).Add(c.idle)
	if h := c.hard.Load(); h != 0 && h < d.UnixNano() {
		return time.Unix(0, h)
	}
	return d
}

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		dl := c.deadline()
		if err := c.Conn.SetReadDeadline(dl); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.touch()
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && c.deadline().After(dl) {
			continue // a write moved the deadline on
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	// A client that stops reading blocks our writes: that is idle too.
	dl := time.Now().Add(c.idle)
	if h := c.hard.Load(); h != 0 && h < dl.UnixNano() {
		dl = time.Unix(0, h)
	}
	if err := c.Conn.SetWriteDeadline(dl); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}
