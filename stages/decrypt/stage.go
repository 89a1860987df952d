package decrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the decrypt stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name: "decrypt",
		Summary: "Decrypts OpenPGP uploads (.pgp, .gpg, .asc, or detected by content) with the tenant's key into a temporary plaintext that later stages read only after " +
			"the integrity check passed; passes plaintext uploads through unless the tenant requires encryption.",
		New: func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	in, err := os.Open(f.Staged)
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("decrypt: %w", err)
	}
	defer in.Close()
	head := make([]byte, SniffLen)
	n, _ := io.ReadFull(in, head)
	lower := strings.ToLower(f.Name)
	byName := strings.HasSuffix(lower, ".pgp") || strings.HasSuffix(lower, ".gpg") || strings.HasSuffix(lower, ".asc")
	if !byName && !IsEncrypted(head[:n]) {
		if run.Tenant.RequireEncryption {
			return pipeline.Stats{}, pipeline.Reject(schemas.CodeEncryptionRequired,
				"this account only accepts encrypted files; encrypt the file with the public key we issued (gpg --encrypt --recipient %s) and upload it again", keyRef(run.Tenant.PGPKeyID))
		}
		f.Plain = f.Staged
		return pipeline.Stats{RowsIn: 1, RowsOut: 1}, nil
	}
	if len(run.Tenant.PGPPrivateKey) == 0 {
		return pipeline.Stats{}, pipeline.Reject(schemas.CodeDecryptFailed,
			"the file is encrypted but no key was issued for this account yet; ask your roster contact for our public key")
	}
	if len(run.KeyPassphrase) == 0 {
		return pipeline.Stats{}, errors.New("decrypt: ROSTER_KEY_PASSPHRASE is not set, so the tenant's private key cannot be unlocked")
	}
	kr, err := LoadPrivate(run.Tenant.PGPPrivateKey, run.KeyPassphrase)
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("decrypt: load the tenant's key: %w", err)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return pipeline.Stats{}, fmt.Errorf("decrypt: %w", err)
	}
	out, err := os.CreateTemp(run.StagingDir, ".plain-*")
	if err != nil {
		return pipeline.Stats{}, fmt.Errorf("decrypt: create plaintext file: %w", err)
	}
	f.Temp = append(f.Temp, out.Name())
	_, err = Decrypt(ctx, out, in, kr, run.Tenant.MaxFileBytes)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("decrypt: write plaintext: %w", cerr)
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrTooLarge):
		return pipeline.Stats{}, pipeline.Reject(schemas.CodeDecryptTooLarge,
			"the decrypted file is larger than this account's limit of %d bytes; split it into smaller files", run.Tenant.MaxFileBytes)
	case errors.Is(err, ErrDecryptFailed), errors.Is(err, ErrNotEncrypted):
		return pipeline.Stats{}, pipeline.Reject(schemas.CodeDecryptFailed, "%s (expected key %s)", customerMessage(err), keyRef(run.Tenant.PGPKeyID))
	default:
		return pipeline.Stats{}, fmt.Errorf("decrypt %s: %w", f.Name, err)
	}
	// Only now, with the integrity check passed at EOF, is the plaintext
	// handed on.
	f.Plain, f.Encrypted = out.Name(), true
	return pipeline.Stats{RowsIn: 1, RowsOut: 1}, nil
}

func keyRef(id string) string {
	if id == "" {
		return "(none issued)"
	}
	return "0x" + id
}

// customerMessage strips the package prefix from a decrypt error.
func customerMessage(err error) string {
	msg := err.Error()
	for _, p := range []string{ErrDecryptFailed.Error() + ": ", ErrNotEncrypted.Error() + ": "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
