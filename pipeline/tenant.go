package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Tenant is one customer and its settings. Tenants live in PostgreSQL so
// that every command and every replica sees the same ones.
type Tenant struct {
	ID                  string         `db:"id" json:"id"`
	Seats               sql.NullInt64  `db:"seats" json:"-"`
	DateFormat          string         `db:"date_format" json:"date_format"`
	Timezone            string         `db:"timezone" json:"timezone"`
	ContactEmail        string         `db:"contact_email" json:"contact_email"`
	Omitted             string         `db:"omitted" json:"omitted"`
	MassDeactivationPct float64        `db:"mass_deactivation_pct" json:"mass_deactivation_pct"`
	Delimiter           string         `db:"delimiter" json:"delimiter"`
	RequireEncryption   bool           `db:"require_encryption" json:"require_encryption"`
	MaxFileBytes        int64          `db:"max_file_bytes" json:"max_file_bytes"`
	CustomFields        pq.StringArray `db:"custom_fields" json:"custom_fields"`
	NightlyAt           string         `db:"nightly_at" json:"nightly_at"`
	ExportEnabled       bool           `db:"export_enabled" json:"export_enabled"`
	SFTPPasswordHash    string         `db:"sftp_password_hash" json:"-"`
	SFTPPublicKeys      pq.StringArray `db:"sftp_public_keys" json:"-"`
	PGPPublicKey        string         `db:"pgp_public_key" json:"-"`
	PGPPrivateKey       []byte         `db:"pgp_private_key" json:"-"`
	PGPKeyID            string         `db:"pgp_key_id" json:"pgp_key_id"`
	CreatedAt           time.Time      `db:"created_at" json:"created_at"`
}

// SeatLimit returns the tenant's seats and whether it has a limit at all.
func (t *Tenant) SeatLimit() (int, bool) { return int(t.Seats.Int64), t.Seats.Valid }

// Location is the tenant's time zone; an unknown zone falls back to UTC so a
// typo never stops a run (tenant add validates it).
func (t *Tenant) Location() *time.Location {
	loc, err := time.LoadLocation(t.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Today is the current date in the tenant's time zone, as midnight UTC.
func (t *Tenant) Today(now time.Time) time.Time {
	y, m, d := now.In(t.Location()).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// NewTenant returns a tenant with FILE_RULES.md's defaults.
func NewTenant(id string) *Tenant {
	return &Tenant{ID: id, DateFormat: "MM/DD/YYYY", Timezone: "America/New_York", Omitted: "keep",
		MassDeactivationPct: 20, Delimiter: "comma", MaxFileBytes: 1 << 30, NightlyAt: "02:00", ExportEnabled: true,
		CustomFields: pq.StringArray{}, SFTPPublicKeys: pq.StringArray{}}
}

const tenantColumns = `id, seats, date_format, timezone, contact_email, omitted, mass_deactivation_pct, delimiter,
	require_encryption, max_file_bytes, custom_fields, nightly_at, export_enabled, sftp_password_hash,
	sftp_public_keys, pgp_public_key, pgp_private_key, pgp_key_id, created_at`

// Tenants reads and writes tenants.
type Tenants struct{ DB *sqlx.DB }

// Get returns one tenant, or an error wrapping ErrUnknownTenant.
func (s Tenants) Get(ctx context.Context, id string) (*Tenant, error) {
	var t Tenant
	err := s.DB.GetContext(ctx, &t, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("tenant %q: %w", id, ErrUnknownTenant)
	}
	if err != nil {
		return nil, fmt.Errorf("read tenant %q: %w", id, err)
	}
	return &t, nil
}

// List returns all tenants ordered by id.
func (s Tenants) List(ctx context.Context) ([]*Tenant, error) {
	var ts []*Tenant
	if err := s.DB.SelectContext(ctx, &ts, `SELECT `+tenantColumns+` FROM tenants ORDER BY id`); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return ts, nil
}

// Put inserts or replaces a tenant's settings.
func (s Tenants) Put(ctx context.Context, t *Tenant) error {
	if _, err := time.LoadLocation(t.Timezone); err != nil {
		return fmt.Errorf("tenant %q: unknown time zone %q", t.ID, t.Timezone)
	}
	_, err := s.DB.NamedExecContext(ctx, `INSERT INTO tenants (id, seats, date_format, timezone, contact_email, omitted,
		mass_deactivation_pct, delimiter, require_encryption, max_file_bytes, custom_fields, nightly_at, export_enabled,
		sftp_password_hash, sftp_public_keys, pgp_public_key, pgp_private_key, pgp_key_id)
	VALUES (:id, :seats, :date_format, :timezone, :contact_email, :omitted, :mass_deactivation_pct, :delimiter,
		:require_encryption, :max_file_bytes, :custom_fields, :nightly_at, :export_enabled, :sftp_password_hash,
		:sftp_public_keys, :pgp_public_key, :pgp_private_key, :pgp_key_id)
	ON CONFLICT (id) DO UPDATE SET seats = EXCLUDED.seats, date_format = EXCLUDED.date_format,
		timezone = EXCLUDED.timezone, contact_email = EXCLUDED.contact_email, omitted = EXCLUDED.omitted,
		mass_deactivation_pct = EXCLUDED.mass_deactivation_pct, delimiter = EXCLUDED.delimiter,
		require_encryption = EXCLUDED.require_encryption, max_file_bytes = EXCLUDED.max_file_bytes,
		custom_fields = EXCLUDED.custom_fields, nightly_at = EXCLUDED.nightly_at, export_enabled = EXCLUDED.export_enabled,
		sftp_password_hash = EXCLUDED.sftp_password_hash, sftp_public_keys = EXCLUDED.sftp_public_keys,
		pgp_public_key = EXCLUDED.pgp_public_key, pgp_private_key = EXCLUDED.pgp_private_key, pgp_key_id = EXCLUDED.pgp_key_id`, t)
	if err != nil {
		return fmt.Errorf("save tenant %q: %w", t.ID, err)
	}
	return nil
}
