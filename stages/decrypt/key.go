// Package decrypt turns OpenPGP-encrypted HR files dropped by a tenant into
// plaintext, using a per-tenant key pair that roster generates and whose
// public half it hands to the customer.
//
// Interoperability target is GnuPG 2.2 and 2.4 on the customer's side. Keys
// are therefore v4 EdDSA (Ed25519) with an ECDH Curve25519 encryption subkey,
// which both versions support, and their preferences advertise neither AEAD
// nor v5/v6 features; Decrypt still accepts AEAD (OCB/EAX, SEIPDv2 and the
// GnuPG 2.4 "OCB encrypted data" packet) in case a customer forces it.
package decrypt

import (
	"bytes"
	"crypto"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
)

// KeyPair is the key material for one tenant, as produced by GenerateKey.
type KeyPair struct {
	// PublicArmored is the armored public key to hand to the customer.
	PublicArmored string
	// PrivateArmored is the armored private key whose secret material is
	// encrypted with the passphrase (iterated+salted S2K, AES-256). This is
	// what roster stores (in PostgreSQL); it is useless without the
	// passphrase, which is kept elsewhere.
	PrivateArmored []byte
	// KeyID is the long key id (16 upper-case hex digits) of the encryption
	// subkey: the id GnuPG prints ("encrypted with ... ID ...") and the one
	// an encrypted file names as its recipient.
	KeyID string
	// Fingerprint is the primary key fingerprint in upper-case hex, for the
	// customer to verify the public key out of band.
	Fingerprint string
}

// s2kConfig protects the stored private key. Iterated+salted SHA-256 with
// the maximum count (~65 MB hashed, tens of milliseconds) is the strongest
// mode usable without AEAD key protection; Argon2 would need AEAD (S2K usage
// 253), which GnuPG 2.2 cannot read should an operator ever need to import
// the key there.
var s2kConfig = &s2k.Config{
	S2KMode:  s2k.IteratedSaltedS2K,
	Hash:     crypto.SHA256,
	S2KCount: 65011712,
}

// GenerateKey creates a fresh key pair for tenant, with now as creation time
// (time.Now if zero). passphrase must not be empty: the private key is only
// ever serialized encrypted.
func GenerateKey(tenant string, passphrase []byte, now time.Time) (k *KeyPair, err error) {
	if err := validTenant(tenant); err != nil {
		return nil, err
	}
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w: a passphrase is required to protect the private key", ErrBadPassphrase)
	}
	if now.IsZero() {
		now = time.Now()
	}
	// OpenPGP stores creation times in whole seconds; truncating keeps the
	// in-memory entity identical to what a reader will parse back.
	now = now.Truncate(time.Second)

	cfg := &packet.Config{
		DefaultHash:   crypto.SHA256,
		DefaultCipher: packet.CipherAES256,
		Time:          func() time.Time { return now },
		// v4 EdDSA + ECDH/Curve25519: fast to generate, small, and fully
		// supported by GnuPG 2.2 and 2.4 (unlike RFC 9580 Ed25519/X25519).
		Algorithm:              packet.PubKeyAlgoEdDSA,
		Curve:                  packet.Curve25519,
		DefaultCompressionAlgo: packet.CompressionZLIB,
		// AEADConfig stays nil on purpose: setting it would advertise
		// SEIPDv2 in the key's features, and we want GnuPG to produce the
		// classic SEIPDv1 (MDC) format that every version handles.
		S2KConfig: s2kConfig,
	}

	e, err := openpgp.NewEntity("roster upload key", "tenant "+tenant, "", cfg)
	if err != nil {
		return nil, fmt.Errorf("decrypt: generating key: %w", err)
	}
	if err := setPreferences(e, cfg); err != nil {
		return nil, err
	}
	if len(e.Subkeys) != 1 {
		return nil, fmt.Errorf("decrypt: generated key has %d subkeys, want 1", len(e.Subkeys))
	}

	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, map[string]string{"Comment": "roster upload key for tenant " + tenant})
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(w); err != nil {
		return nil, fmt.Errorf("decrypt: serializing public key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}

	// Encrypt only after the public key and all signatures exist: signing
	// needs the unencrypted primary key.
	if err := e.EncryptPrivateKeys(passphrase, cfg); err != nil {
		return nil, fmt.Errorf("decrypt: encrypting private key: %w", err)
	}
	var priv bytes.Buffer
	w, err = armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	// Without re-signing: the signatures made above are kept and the
	// (now encrypted) private key is not needed to write them.
	if err := e.SerializePrivateWithoutSigning(w, cfg); err != nil {
		return nil, fmt.Errorf("decrypt: serializing private key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}

	return &KeyPair{
		PublicArmored:  pub.String(),
		PrivateArmored: priv.Bytes(),
		KeyID:          keyID(e.Subkeys[0].PublicKey.KeyId),
		Fingerprint:    fmt.Sprintf("%X", e.PrimaryKey.Fingerprint),
	}, nil
}

// setPreferences rewrites the user id self-signature so the key advertises
// only algorithms GnuPG 2.2 and 2.4 both handle well. go-crypto puts
// "uncompressed" first (a defence against compression side channels in
// interactive protocols, irrelevant for files at rest); HR CSVs compress
// ~5-10x, so ZLIB first keeps uploads small, and Decrypt bounds the
// decompressed size anyway.
func setPreferences(e *openpgp.Entity, cfg *packet.Config) error {
	for _, id := range e.Identities {
		sig := id.SelfSignature
		sig.PreferredSymmetric = []uint8{uint8(packet.CipherAES256), uint8(packet.CipherAES128)}
		sig.PreferredHash = []uint8{8, 10} // SHA256, SHA512 (RFC 4880 ids)
		sig.PreferredCompression = []uint8{uint8(packet.CompressionZLIB), uint8(packet.CompressionZIP), uint8(packet.CompressionNone)}
		sig.SEIPDv1, sig.SEIPDv2 = true, false
		sig.PreferredCipherSuites = nil
		if err := sig.SignUserId(id.UserId.Id, e.PrimaryKey, e.PrivateKey, cfg); err != nil {
			return fmt.Errorf("decrypt: signing key preferences: %w", err)
		}
		id.Signatures = []*packet.Signature{sig}
	}
	return nil
}

// validTenant rejects tenant names that cannot go into an OpenPGP user id
// comment (go-crypto refuses "()<>" and NUL) or would be confusing there.
func validTenant(tenant string) error {
	if tenant == "" || len(tenant) > 128 {
		return fmt.Errorf("%w: tenant name must be 1-128 bytes", ErrInvalidKey)
	}
	if strings.ContainsAny(tenant, "()<>") || strings.IndexFunc(tenant, func(r rune) bool {
		return !unicode.IsPrint(r) || r == unicode.ReplacementChar
	}) >= 0 {
		return fmt.Errorf("%w: tenant name %q contains characters not allowed in a key user id", ErrInvalidKey, tenant)
	}
	return nil
}

// Keyring is a tenant's unlocked private key, ready for Decrypt. It holds
// decrypted secret key material in memory: keep it no longer than needed.
type Keyring struct {
	entities openpgp.EntityList
}

// KeyIDs returns the long key ids (upper-case hex) of the keys able to
// decrypt, i.e. the ids a correctly encrypted file names as recipient.
func (k *Keyring) KeyIDs() []string {
	if k == nil {
		return nil
	}
	var ids []string
	for _, key := range k.entities.DecryptionKeys() {
		ids = append(ids, keyID(key.PublicKey.KeyId))
	}
	return ids
}

// LoadPrivate parses a stored armored private key (as in
// KeyPair.PrivateArmored) and decrypts its secret material with passphrase.
// A wrong or missing passphrase yields an error wrapping ErrBadPassphrase;
// a key stored without passphrase protection is refused (ErrInvalidKey)
// because it means the storage invariant was broken somewhere.
func LoadPrivate(armored []byte, passphrase []byte) (*Keyring, error) {
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("%w: not an armored OpenPGP key: %v", ErrInvalidKey, err)
	}
	if block.Type != openpgp.PrivateKeyType {
		return nil, fmt.Errorf("%w: armored block is %q, want %q", ErrInvalidKey, block.Type, openpgp.PrivateKeyType)
	}
	el, err := openpgp.ReadKeyRing(block.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	for _, e := range el {
		for _, pk := range privateKeys(e) {
			if !pk.Encrypted {
				return nil, fmt.Errorf("%w: private key %s is stored without passphrase protection", ErrInvalidKey, keyID(pk.KeyId))
			}
		}
	}
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w: no passphrase given", ErrBadPassphrase)
	}
	for _, e := range el {
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			// With S2K usage 254 a wrong passphrase shows up as a SHA-1
			// checksum mismatch; go-crypto cannot tell that apart from a
			// corrupted key, and a wrong passphrase is by far the likelier.
			return nil, fmt.Errorf("%w: cannot unlock key %X: %v", ErrBadPassphrase, e.PrimaryKey.Fingerprint, err)
		}
	}
	kr := &Keyring{entities: el}
	if len(el.DecryptionKeys()) == 0 {
		return nil, fmt.Errorf("%w: key has no secret encryption subkey", ErrInvalidKey)
	}
	return kr, nil
}

func privateKeys(e *openpgp.Entity) []*packet.PrivateKey {
	var pks []*packet.PrivateKey
	if e.PrivateKey != nil && !e.PrivateKey.Dummy() {
		pks = append(pks, e.PrivateKey)
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && !s.PrivateKey.Dummy() {
			pks = append(pks, s.PrivateKey)
		}
	}
	return pks
}

func keyID(id uint64) string { return fmt.Sprintf("%016X", id) }
