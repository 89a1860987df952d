// Package sshdtest runs a real OpenSSH sshd on 127.0.0.1 for tests that
// need a foreign SFTP server. Import it from _test.go files only.
//
// Each Server has its own config, host key, client key, known_hosts and
// port, all in the test's temporary directories; it is killed at the end of
// the test. Logins are limited to SFTP (ForceCommand internal-sftp) as the
// user running the test. When that user is root, the session is chrooted
// into Root, so the client sees Root as "/"; otherwise the session starts
// in Root. Either way a relative path (SFTPConfig.Root "") is relative to
// Root.
//
// Start skips the test when sshd is not installed, and fails it instead
// when the environment variable CI is set.
package sshdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Server is a running sshd.
type Server struct {
	Addr               string // 127.0.0.1:port
	User               string // the login user
	KeyFile            string // unencrypted ed25519 key authorized for User
	KnownHostsFile     string // holds the host key for Addr
	HostKeyFingerprint string // SHA256:... of the host key
	HostKey            ssh.PublicKey

	// Root is the directory on disk the client starts in: with the
	// incoming/, processed/, failed/ and reports/ folders created.
	Root string
	// RemoteRoot is Root as an absolute path for the client: "/" when
	// chrooted, else Root itself.
	RemoteRoot string
	Chrooted   bool

	dir  string // config, keys, logs
	cmd  *exec.Cmd
	logs *syncBuffer
}

// Folders created in Root.
var Folders = []string{"incoming", "processed", "failed", "reports"}

// Start runs an sshd for the duration of t.
func Start(t testing.TB) *Server {
	t.Helper()
	sshd := findSSHD()
	keygen, kerr := exec.LookPath("ssh-keygen")
	if sshd == "" || kerr != nil {
		msg := "sshdtest: OpenSSH sshd and ssh-keygen are needed (apt-get install openssh-server)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this fails instead of skipping")
		}
		t.Skip(msg)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	root := os.Getuid() == 0
	if root {
		// sshd refuses to run without its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{User: u.Username, dir: t.TempDir(), logs: &syncBuffer{}}
	s.Root = s.chrootDir(t, root)
	s.Chrooted = root && s.Root != ""
	if !s.Chrooted {
		s.Root = filepath.Join(t.TempDir(), "home")
		if err := os.Mkdir(s.Root, 0o755); err != nil {
			t.Fatal(err)
		}
		s.RemoteRoot = s.Root
	} else {
		s.RemoteRoot = "/"
	}
	for _, d := range Folders {
		if err := os.Mkdir(filepath.Join(s.Root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	hostKey := filepath.Join(s.dir, "ssh_host_ed25519_key")
	s.KeyFile = filepath.Join(s.dir, "id_ed25519")
	for _, k := range []string{hostKey, s.KeyFile} {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshdtest", "-f", k).CombinedOutput()
		if err != nil {
			t.Fatalf("sshdtest: ssh-keygen: %v\n%s", err, out)
		}
	}
	s.HostKey = readPublicKey(t, hostKey+".pub")
	s.HostKeyFingerprint = ssh.FingerprintSHA256(s.HostKey)
	clientPub, err := os.ReadFile(s.KeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.authorizedKeys(), clientPub, 0o600); err != nil {
		t.Fatal(err)
	}

	// A free port can be taken between our probe and sshd's bind: a few
	// bounded attempts.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if lastErr = s.start(t, sshd, freePort(t)); lastErr == nil {
			break
		}
		if !strings.Contains(lastErr.Error(), "already in use") {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sshdtest: %v", lastErr)
	}
	s.KnownHostsFile = filepath.Join(s.dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey) + "\n"
	if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func findSSHD() string {
	if p, err := exec.LookPath("sshd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err == nil {
		return "/usr/sbin/sshd"
	}
	return ""
}

func (s *Server) authorizedKeys() string { return filepath.Join(s.dir, "authorized_keys") }

// chrootDir returns a new directory fit for ChrootDirectory (every
// component owned by root and not writable by group or others), or "" if
// not running as root or none can be made. The test's temporary directory
// is usually under the world-writable /tmp, so it is made in /run.
func (s *Server) chrootDir(t testing.TB, root bool) string {
	if !root {
		return ""
	}
	for _, base := range []string{os.TempDir(), "/run"} {
		if !chrootable(base) {
			continue
		}
		d, err := os.MkdirTemp(base, "sshdtest-chroot-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return ""
}

// chrootable reports whether every component of dir is owned by root and
// not writable by group or others, as sshd requires of a chroot.
func chrootable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(dir)
		if err != nil {
			return false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start writes the config for port and runs sshd until it listens.
func (s *Server) start(t testing.TB, sshd string, port int) error {
	forceCommand := "internal-sftp -d /"
	chroot := ""
	if s.Chrooted {
		chroot = "ChrootDirectory " + s.Root + "\n"
	} else {
		forceCommand = "internal-sftp -d " + s.Root
	}
	config := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers %s
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 50
Subsystem sftp internal-sftp
ForceCommand %s
%sLogLevel VERBOSE
`, port, filepath.Join(s.dir, "ssh_host_ed25519_key"), filepath.Join(s.dir, "sshd.pid"),
		s.authorizedKeys(), s.User, forceCommand, chroot)
	cfgFile := filepath.Join(s.dir, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		return err
	}
	logs := &syncBuffer{}
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	listening := fmt.Sprintf("Server listening on 127.0.0.1 port %d", port)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), listening) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited at start:\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not listen within 10s:\n%s", logs.String())
		}
	}
	s.cmd, s.logs = cmd, logs
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	t.Cleanup(func() {
		// Let sessions whose client has gone end and be reaped by sshd,
		// then cut the others; killing sshd first would orphan them.
		s.waitSessions(3 * time.Second)
		if s.KillSessions() > 0 {
			s.waitSessions(2 * time.Second)
		}
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("sshdtest: sshd (pid %d) did not exit", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	return nil
}

// Logs returns what sshd has logged so far.
func (s *Server) Logs() string { return s.logs.String() }

// AuthorizeKey adds an OpenSSH public key line for User.
func (s *Server) AuthorizeKey(t testing.TB, line string) {
	t.Helper()
	f, err := os.OpenFile(s.authorizedKeys(), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.TrimSpace(line) + "\n"); err != nil {
		t.Fatal(err)
	}
}

// KillSessions kills (SIGKILL) the processes serving open connections, as a
// network failure or a server crash would cut them; sshd itself keeps
// listening. Only descendants of this server's sshd are touched.
func (s *Server) KillSessions() int {
	pids := descendants(s.cmd.Process.Pid)
	for _, pid := range slices.Backward(pids) { // the deepest first
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

// waitSessions waits, at most d, until sshd has no child processes.
func (s *Server) waitSessions(d time.Duration) {
	deadline := time.Now().Add(d)
	for len(descendants(s.cmd.Process.Pid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// descendants returns the process ids below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func readPublicKey(t testing.TB, file string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
