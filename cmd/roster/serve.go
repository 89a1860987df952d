package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/jobs"
	"github.com/roster-hr/roster/jobs/status"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/sftpd"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/export"
	"github.com/roster-hr/roster/stages/fetch/store"
	"github.com/roster-hr/roster/stages/report/email"
	"golang.org/x/crypto/ssh"
)

// tenantAuth checks SFTP logins against the tenants table, so every replica
// sees the same credentials.
type tenantAuth struct{ db *sqlx.DB }

// dummyHash is compared for unknown tenants so a login takes as long
// whether or not the tenant exists.
var dummyHash = sync.OnceValue(func() string {
	h, _ := sftpd.HashPassword([]byte("roster-no-such-tenant"))
	return h
})

func (a tenantAuth) CheckPassword(ctx context.Context, user string, pw []byte) (bool, error) {
	t, err := pipeline.Tenants{DB: a.db}.Get(ctx, user)
	if errors.Is(err, pipeline.ErrUnknownTenant) || (err == nil && t.SFTPPasswordHash == "") {
		sftpd.CheckPasswordHash(dummyHash(), pw)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return sftpd.CheckPasswordHash(t.SFTPPasswordHash, pw), nil
}

func (a tenantAuth) AuthorizedKeys(ctx context.Context, user string) ([]ssh.PublicKey, error) {
	t, err := pipeline.Tenants{DB: a.db}.Get(ctx, user)
	if errors.Is(err, pipeline.ErrUnknownTenant) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []ssh.PublicKey
	for _, k := range t.SFTPPublicKeys {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err == nil {
			keys = append(keys, pk)
		}
	}
	return keys, nil
}

// sftpRoot is where the embedded server keeps the tenants' homes.
func (a *app) sftpRoot() string { return filepath.Join(a.dataDir, "sftp") }

func (a *app) runner(db *sqlx.DB) (*pipeline.Runner, error) {
	spec, err := pipeline.LoadSpec(a.pipeline)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return &pipeline.Runner{DB: db, Registry: stages.Registry(), Spec: spec,
		StagingDir: filepath.Join(a.dataDir, "staging"), Log: a.log}, nil
}

// localStores opens tenants' homes of the embedded server's data dir.
func (a *app) localStores(srv *sftpd.Server) func(ctx context.Context, tenant string) (pipeline.Store, error) {
	return func(ctx context.Context, tenant string) (pipeline.Store, error) {
		if srv != nil {
			// Tenants added while serve runs get their home at first poll.
			if err := srv.EnsureHome(tenant); err != nil {
				return nil, err
			}
		}
		return store.Local(filepath.Join(a.sftpRoot(), tenant)), nil
	}
}

func cmdServe(ctx context.Context, a *app, args []string) error {
	fs := flags("serve")
	listen := fs.String("sftp-listen", "127.0.0.1:2222", "address of the embedded SFTP server")
	interval := fs.Duration("poll-interval", time.Minute, "how often every tenant's /incoming is polled (an upload to the embedded server is taken at once)")
	maxUpload := fs.Int64("max-upload-bytes", 1<<30, "largest upload the SFTP server accepts, enforced while writing")
	idle := fs.Duration("idle-timeout", 10*time.Minute, "close SFTP sessions idle this long")
	httpListen := fs.String("http-listen", "", "serve the status page, /healthz and /metrics here (e.g. 127.0.0.1:8080); empty: off")
	grace := fs.Duration("grace", 30*time.Second, "on SIGTERM, how long runs in flight may finish before they roll back")
	smtp := smtpFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *interval < time.Second {
		return usagef("serve: --poll-interval must be at least 1s")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	tenants, err := pipeline.Tenants{DB: db}.List(ctx)
	if err != nil {
		return err
	}
	if err := checkPassphrase(tenants); err != nil {
		return err
	}
	rn, err := a.runner(db)
	if err != nil {
		return err
	}
	rn.Notify = smtp.mailer(a)
	poller := &jobs.Poller{Runner: rn, Interval: *interval, Grace: *grace, KeyPassphrase: []byte(os.Getenv("ROSTER_KEY_PASSPHRASE")), Log: a.log,
		OnResult: func(r *pipeline.Result) { printRun(a, r) }}
	srv, err := sftpd.New(a.sftpRoot(), tenantAuth{db},
		sftpd.WithHostKeyFile(filepath.Join(a.dataDir, "ssh_host_ed25519_key")),
		sftpd.WithLogger(a.log), sftpd.WithMaxUploadSize(*maxUpload), sftpd.WithIdleTimeout(*idle),
		sftpd.WithOnUpload(func(tenant, name string) { poller.Kick(tenant) }))
	if err != nil {
		return fmt.Errorf("start the SFTP server: %w", err)
	}
	poller.StoreFor = a.localStores(srv)
	poller.Elector = &jobs.Elector{DB: db}
	poller.Nightly = &jobs.Nightly{DB: db, Log: a.log, After: func(ctx context.Context, t *pipeline.Tenant, date time.Time) error {
		// The nightly of day D exports D-1, the last complete day (the export
		// stage's default, when: nightly).
		if !t.ExportEnabled {
			return nil
		}
		_, err := export.Export(ctx, db, t.ID, date.AddDate(0, 0, -1), export.Options{Out: filepath.Join(a.dataDir, "export")})
		return err
	}}
	for _, t := range tenants {
		if err := srv.EnsureHome(t.ID); err != nil {
			return fmt.Errorf("create the SFTP home of %s: %w", t.ID, err)
		}
		// Runs a dead process left "running" are failed now, with a reason,
		// rather than at the tenant's next upload.
		if unlock, err := pipeline.LockTenant(ctx, db, t.ID); err == nil {
			err = pipeline.FailStaleRuns(ctx, db, t.ID)
			unlock()
			if err != nil {
				return err
			}
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usagef("serve: listen on %s: %v", *listen, err)
	}
	fmt.Fprintf(a.stdout, "roster serve: SFTP on %s, host key %s\n", ln.Addr(), srv.HostKeyFingerprint())
	fmt.Fprintf(a.stdout, "polling %d tenant(s) every %s; Ctrl-C to stop\n", len(tenants), *interval)
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ctx, ln) }()
	go func() { errc <- poller.Run(ctx) }()
	waiting := 2
	if *httpListen != "" {
		hl, err := net.Listen("tcp", *httpListen)
		if err != nil {
			return usagef("serve: listen on %s: %v", *httpListen, err)
		}
		fmt.Fprintf(a.stdout, "status page on http://%s/\n", hl.Addr())
		hs := &http.Server{Handler: status.Handler(db, status.WithLogger(a.log), status.WithWaiting(waitingFiles(poller)),
			status.WithCheck("sftp", func(context.Context) error { return checkListener(ln.Addr().String()) })),
			ReadHeaderTimeout: 5 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			hs.Shutdown(sctx) //nolint:errcheck // best effort on the way out
		}()
		go func() {
			if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
		waiting++
	}
	var first error
	for i := 0; i < waiting; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	a.log.Info("stopped")
	return first
}

// waitingFiles counts each tenant's complete uploads not yet taken.
func waitingFiles(p *jobs.Poller) func(ctx context.Context) (map[string]int, error) {
	return func(ctx context.Context) (map[string]int, error) {
		ts, err := pipeline.Tenants{DB: p.Runner.DB}.List(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		for _, t := range ts {
			st, err := p.StoreFor(ctx, t.ID)
			if err != nil {
				return nil, err
			}
			list, err := st.List(ctx)
			if err != nil {
				return nil, err
			}
			out[t.ID] = len(list)
		}
		return out, nil
	}
}

// checkListener is the SFTP health check: the server accepts connections.
func checkListener(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// smtpConfig is the e-mail flags shared by serve and run.
type smtpConfig struct{ addr, from, user *string }

func smtpFlags(fs *flag.FlagSet) smtpConfig {
	return smtpConfig{
		addr: fs.String("smtp-addr", "", "SMTP server host:port for e-mails to tenants' technical contacts; empty: no e-mail"),
		from: fs.String("smtp-from", "roster@localhost", "sender address of those e-mails"),
		user: fs.String("smtp-user", "", "SMTP login (password from $ROSTER_SMTP_PASSWORD; sent only over TLS or to localhost)"),
	}
}

func (c smtpConfig) mailer(a *app) pipeline.Notifier {
	if *c.addr == "" {
		return nil
	}
	return &email.Mailer{Addr: *c.addr, From: *c.from, Username: *c.user, Password: os.Getenv("ROSTER_SMTP_PASSWORD"), Log: a.log}
}

// checkPassphrase refuses to start when a tenant has a PGP key but the
// passphrase that unlocks it is missing: better now than at 2 a.m.
func checkPassphrase(tenants []*pipeline.Tenant) error {
	if os.Getenv("ROSTER_KEY_PASSPHRASE") != "" {
		return nil
	}
	var with []string
	for _, t := range tenants {
		if len(t.PGPPrivateKey) > 0 {
			with = append(with, t.ID)
		}
	}
	if len(with) > 0 {
		return usagef("ROSTER_KEY_PASSPHRASE is not set, but tenants %s have PGP keys it unlocks", strings.Join(with, ", "))
	}
	return nil
}

// cmdPoll is one poll of every tenant's /incoming in the embedded server's
// data dir, as serve makes every --poll-interval: for cron-style operation
// and for measuring many small tenants.
func cmdPoll(ctx context.Context, a *app, args []string) error {
	fs := flags("poll")
	tenant := fs.String("tenant", "", "only this tenant (default: every tenant)")
	workers := fs.Int("workers", 2, "tenants processed at once; each holds up to three database connections (its tenant lock, its work, the snapshot read ahead), and the pool grows to match")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *workers < 1 {
		return usagef("poll: --workers must be at least 1")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	// Each worker holds its tenant's lock on a session for the whole run
	// and needs more connections to work: with the pool at 16, --workers
	// 16 held every connection in locks and waited forever.
	db.SetMaxOpenConns(max(poolSize, 3**workers+4))
	rn, err := a.runner(db)
	if err != nil {
		return err
	}
	var runs, failed int
	var mu sync.Mutex
	p := &jobs.Poller{Runner: rn, StoreFor: a.localStores(nil), Workers: *workers, Log: a.log,
		KeyPassphrase: []byte(os.Getenv("ROSTER_KEY_PASSPHRASE")),
		OnResult: func(r *pipeline.Result) {
			mu.Lock()
			defer mu.Unlock()
			runs++
			if r.Status == pipeline.RunFailed {
				failed++
			}
		}}
	if *tenant != "" {
		if _, err := p.PollTenant(ctx, *tenant); err != nil {
			return err
		}
	} else if err := p.PollAll(ctx); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "poll: %d run(s), %d failed\n", runs, failed)
	if failed > 0 {
		return exitError{exitFailed}
	}
	return nil
}
