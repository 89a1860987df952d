// Package jobs runs roster unattended: a poller that takes every tenant's
// complete uploads from its SFTP /incoming and runs the pipeline over them,
// scheduled with gocron. Later jobs (nightly runs, the deactivation sweep,
// backfills) grow here.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/roster-hr/roster/pipeline"
)

// Poller takes complete uploads from each tenant's store and runs the
// pipeline over them. A tenant never has two runs at once: the runner's
// tenant lock holds across processes, and a busy tenant is simply taken at
// the next poll.
type Poller struct {
	Runner *pipeline.Runner
	// StoreFor opens a tenant's SFTP store (and may prepare its home).
	StoreFor func(ctx context.Context, tenant string) (pipeline.Store, error)
	// Interval between polls of every tenant. An upload to the embedded
	// server is also taken at once through Kick.
	Interval      time.Duration
	Workers       int // tenants polled at once; default 2
	KeyPassphrase []byte
	Log           *slog.Logger
	// OnResult, when set, sees every run a poll made.
	OnResult func(*pipeline.Result)
	// Elector, when set, lets only the leader among replicas run the
	// scheduled polls (uploads kicked to this replica are still taken: the
	// tenant lock and upload claims keep that safe).
	Elector gocron.Elector
	// Nightly, when set, is checked every minute for tenants' due nightly
	// work (sweep, export).
	Nightly *Nightly
	// Grace is how long in-flight runs may finish after shutdown begins
	// (SIGTERM) before they are cancelled and roll back; default 30s.
	Grace time.Duration

	kick chan string
	once sync.Once
	// stopping is set when shutdown begins: runs in flight get their grace,
	// but no new tenant's run starts.
	stopping atomic.Bool
}

func (p *Poller) init() {
	p.once.Do(func() {
		p.kick = make(chan string, 1024)
		if p.Log == nil {
			p.Log = slog.Default()
		}
		if p.Workers < 1 {
			p.Workers = 2
		}
	})
}

// Kick asks for tenant to be polled now (an upload just completed). It
// never blocks: a full queue means a poll is coming anyway.
func (p *Poller) Kick(tenant string) {
	p.init()
	select {
	case p.kick <- tenant:
	default:
	}
}

// PollTenant runs the pipeline over the tenant's complete uploads, if any.
// It returns nil, nil when there was nothing to do or the tenant is busy.
func (p *Poller) PollTenant(ctx context.Context, tenant string) (*pipeline.Result, error) {
	p.init()
	store, err := p.StoreFor(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("poll %s: open store: %w", tenant, err)
	}
	res, err := p.Runner.Run(ctx, pipeline.Request{Tenant: tenant, Trigger: pipeline.TriggerScheduled,
		Store: store, KeyPassphrase: p.KeyPassphrase, Discover: func(ctx context.Context) ([]*pipeline.File, error) {
			list, err := store.List(ctx)
			if err != nil {
				return nil, fmt.Errorf("list /incoming: %w", err)
			}
			files := make([]*pipeline.File, 0, len(list))
			for _, rf := range list {
				files = append(files, &pipeline.File{Name: rf.Name, Source: rf.Name, Remote: true, Size: rf.Size, ModTime: rf.ModTime})
			}
			return files, nil
		}})
	if errors.Is(err, pipeline.ErrNoFiles) {
		return nil, nil
	}
	if errors.Is(err, pipeline.ErrTenantBusy) {
		p.Log.Info("tenant busy, taken at the next poll", "tenant", tenant)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("poll %s: %w", tenant, err)
	}
	if p.OnResult != nil {
		p.OnResult(res)
	}
	return res, nil
}

// PollAll polls every tenant, a few at a time.
func (p *Poller) PollAll(ctx context.Context) error {
	p.init()
	tenants, err := pipeline.Tenants{DB: p.Runner.DB}.List(ctx)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, p.Workers)
	var wg sync.WaitGroup
	for _, t := range tenants {
		if ctx.Err() != nil || p.stopping.Load() {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(id string) {
			defer func() { <-sem; wg.Done() }()
			if _, err := p.PollTenant(ctx, id); err != nil {
				p.Log.Error("poll failed", "tenant", id, "err", err)
			}
		}(t.ID)
	}
	wg.Wait()
	return ctx.Err()
}

// Run polls every Interval (gocron, singleton: a slow poll is never
// overlapped by the next) and on every Kick, until ctx is done. In-flight
// runs finish before Run returns.
func (p *Poller) Run(ctx context.Context) error {
	p.init()
	// Runs get a context that outlives the shutdown signal by Grace: a file
	// being applied finishes, or rolls back and stays in /incoming.
	grace := p.Grace
	if grace == 0 {
		grace = 30 * time.Second
	}
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	stopAfter := context.AfterFunc(ctx, func() {
		p.stopping.Store(true)
		time.AfterFunc(grace, cancelRuns)
	})
	defer stopAfter()
	opts := []gocron.SchedulerOption{gocron.WithStopTimeout(grace + 5*time.Second)}
	if p.Elector != nil {
		opts = append(opts, gocron.WithDistributedElector(p.Elector))
	}
	s, err := gocron.NewScheduler(opts...)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	_, err = s.NewJob(gocron.DurationJob(p.Interval),
		gocron.NewTask(func() {
			if ctx.Err() != nil {
				return
			}
			if err := p.PollAll(runCtx); err != nil && ctx.Err() == nil {
				p.Log.Error("poll failed", "err", err)
			}
		}),
		gocron.WithName("poll"),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithStartAt(gocron.WithStartImmediately()))
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	if p.Nightly != nil {
		_, err = s.NewJob(gocron.DurationJob(time.Minute),
			gocron.NewTask(func() {
				if ctx.Err() != nil {
					return
				}
				if err := p.Nightly.RunDue(runCtx); err != nil && ctx.Err() == nil {
					p.Log.Error("nightly jobs failed", "err", err)
				}
			}),
			gocron.WithName("nightly"),
			gocron.WithSingletonMode(gocron.LimitModeReschedule),
			gocron.WithStartAt(gocron.WithStartImmediately()))
		if err != nil {
			return fmt.Errorf("scheduler: %w", err)
		}
	}
	s.Start()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case t := <-p.kick:
				if _, err := p.PollTenant(runCtx, t); err != nil && ctx.Err() == nil {
					p.Log.Error("poll failed", "tenant", t, "err", err)
				}
			}
		}
	}()
	<-ctx.Done()
	wg.Wait()
	return s.Shutdown()
}
