package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/sftpd"
	"github.com/roster-hr/roster/stages/export"
	"github.com/roster-hr/roster/stages/report"
	"golang.org/x/crypto/ssh"
)

const demoTenant = "demo"

// demoFiles are uploaded in this order, as an HR administrator would.
var demoFiles = []string{"fixtures/departments.csv", "fixtures/users.csv", "fixtures/demo/users-changes.csv"}

// cmdDemo is `make run`: the demo tenant, the embedded SFTP server on
// 127.0.0.1, the fixture files uploaded over SFTP with a customer's key, one
// poll of the pipeline, and a summary of what happened and where the report
// landed.
func cmdDemo(ctx context.Context, a *app, args []string) error {
	fs := flags("demo")
	fixtures := fs.String("fixtures", ".", "directory holding fixtures/ (the repository root)")
	if err := parse(fs, args); err != nil {
		return err
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	signer, pub, err := demoCustomerKey(filepath.Join(a.dataDir, "demo"))
	if err != nil {
		return err
	}
	tenants := pipeline.Tenants{DB: db}
	t, err := tenants.Get(ctx, demoTenant)
	if errors.Is(err, pipeline.ErrUnknownTenant) {
		t = pipeline.NewTenant(demoTenant)
		t.ContactEmail = "it@demo.example"
	} else if err != nil {
		return err
	}
	t.SFTPPublicKeys = []string{pub}
	if err := tenants.Put(ctx, t); err != nil {
		return err
	}

	rn, err := a.runner(db)
	if err != nil {
		return err
	}
	srv, err := sftpd.New(a.sftpRoot(), tenantAuth{db}, sftpd.WithHostKeyFile(filepath.Join(a.dataDir, "ssh_host_ed25519_key")), sftpd.WithLogger(a.log))
	if err != nil {
		return fmt.Errorf("start the SFTP server: %w", err)
	}
	if err := srv.EnsureHome(demoTenant); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go srv.Serve(sctx, ln) //nolint:errcheck // stops with sctx
	fmt.Fprintf(a.stdout, "embedded SFTP server on %s (host key %s)\n", ln.Addr(), srv.HostKeyFingerprint())

	client, err := dialSFTP(ln.Addr().String(), demoTenant, signer, srv.HostKeyFingerprint())
	if err != nil {
		return err
	}
	defer client.Close()
	for _, f := range demoFiles {
		if err := upload(client, filepath.Join(*fixtures, f), "/incoming/"+filepath.Base(f)); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "uploaded %s to /incoming as %s\n", f, demoTenant)
		time.Sleep(20 * time.Millisecond) // distinct upload times keep the upload order
	}

	poller := &jobs.Poller{Runner: rn, StoreFor: a.localStores(srv), Log: a.log, KeyPassphrase: []byte(os.Getenv("ROSTER_KEY_PASSPHRASE"))}
	res, err := poller.PollTenant(ctx, demoTenant)
	if err != nil {
		return err
	}
	if res == nil {
		return errors.New("the uploads were not found in /incoming")
	}
	fmt.Fprintln(a.stdout)
	printRun(a, res)
	var active, total int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE active), count(*) FROM users WHERE tenant_id = $1`, demoTenant).Scan(&active, &total); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\nthe directory of %s now holds %d users (%d active)\n", demoTenant, total, active)
	fmt.Fprintln(a.stdout, "\nwhat the customer sees over SFTP:")
	for _, dir := range []string{"/incoming", "/processed", "/failed", "/reports"} {
		infos, err := client.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		var names []string
		for _, fi := range infos {
			names = append(names, fi.Name())
		}
		fmt.Fprintf(a.stdout, "  %-11s %s\n", dir, strings.Join(names, " "))
	}
	for _, f := range res.Files {
		if f.Issues.Total() == 0 || f.Status == pipeline.StatusDuplicate {
			continue
		}
		path := "/reports/" + report.Name(f.Name)
		rf, err := client.Open(path)
		if err != nil {
			return fmt.Errorf("read the report %s: %w", path, err)
		}
		fmt.Fprintf(a.stdout, "\nreport %s (read back over SFTP):\n", path)
		sc := bufio.NewScanner(rf)
		for i := 0; sc.Scan() && i < 8; i++ {
			fmt.Fprintln(a.stdout, "  "+strings.TrimPrefix(sc.Text(), "\uFEFF"))
		}
		rf.Close()
	}
	// What the nightly job does for a complete day, done now for the demo.
	exportDir := filepath.Join(a.dataDir, "export")
	if _, err := export.Export(ctx, db, demoTenant, t.Today(time.Now()), export.Options{Out: exportDir}); err != nil {
		return err
	}
	{
		fmt.Fprintf(a.stdout, "\nanalytics tables (Parquet, one partition per date): %s/{employee_snapshot,employee_events,employee_profile_history,department_hierarchy}/tenant=%s/\n", exportDir, demoTenant)
	}
	fmt.Fprintf(a.stdout, "ledger: roster runs show %d\n", res.RunID)
	return nil
}

// demoCustomerKey is the demo customer's SSH key (a test key, kept under the
// data dir), made on first use.
func demoCustomerKey(dir string) (ssh.Signer, string, error) {
	path := filepath.Join(dir, "test-only-customer-ed25519")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, "", gerr
		}
		block, merr := ssh.MarshalPrivateKey(priv, "roster demo customer (test key)")
		if merr != nil {
			return nil, "", merr
		}
		b = pem.EncodeToMemory(block)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, "", err
		}
	} else if err != nil {
		return nil, "", err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("demo customer key %s: %w", path, err)
	}
	return signer, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
}

// dialSFTP logs in as a customer would, checking the server's host key
// against the fingerprint the server printed.
func dialSFTP(addr, user string, signer ssh.Signer, fingerprint string) (*sftp.Client, error) {
	conn, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, Timeout: 10 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != fingerprint {
				return fmt.Errorf("host key %s is not the server's %s", got, fingerprint)
			}
			return nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("sftp login as %s: %w", user, err)
	}
	c, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func upload(c *sftp.Client, local, remote string) error {
	src, err := os.Open(local)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := c.Create(remote)
	if err != nil {
		return fmt.Errorf("upload %s: %w", remote, err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("upload %s: %w", remote, err)
	}
	return dst.Close()
}
