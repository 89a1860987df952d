package decrypt

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// these (except plain I/O errors from dst/src and context errors, which are
// returned wrapped as-is), so callers can decide with errors.Is whether the
// problem is the customer's file (ErrNotEncrypted, ErrDecryptFailed,
// ErrTooLarge), roster's own key configuration (ErrBadPassphrase,
// ErrInvalidKey) or infrastructure. The wrapped message carries the detail
// that is safe to show to the customer (key ids, never key material).
var (
	// ErrBadPassphrase means the passphrase protecting a stored private key
	// is wrong or missing. It is an operator problem, never the customer's.
	ErrBadPassphrase = errors.New("decrypt: wrong or missing passphrase for the tenant's private key")

	// ErrInvalidKey means stored key material cannot be used: not an
	// OpenPGP private key, stored without passphrase protection, or without
	// a key that can decrypt.
	ErrInvalidKey = errors.New("decrypt: invalid or unusable tenant key")

	// ErrNotEncrypted means the input is not an OpenPGP encrypted message
	// (plain text, a signed-only or compressed-only OpenPGP message, or an
	// armored block of another type such as a public key).
	ErrNotEncrypted = errors.New("decrypt: input is not an OpenPGP encrypted message")

	// ErrDecryptFailed means the file is an OpenPGP message that cannot be
	// decrypted with the tenant's key: encrypted to another key or with a
	// passphrase, malformed, truncated or tampered with (MDC/AEAD failure).
	ErrDecryptFailed = errors.New("decrypt: cannot decrypt file")

	// ErrTooLarge means the decrypted (decompressed) plaintext exceeds the
	// caller's limit; this is how compression bombs are stopped.
	ErrTooLarge = errors.New("decrypt: decrypted file exceeds the size limit")
)
