package decrypt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// SniffLen is how many leading bytes IsEncrypted wants to see to be sure;
// fewer work for the binary form as long as the first packet header and its
// version byte are present.
const SniffLen = 64

const armorMessageStart = "-----BEGIN PGP MESSAGE-----"

// Binary OpenPGP packet tags that can start an encrypted message.
const (
	tagPKESK      = 1  // public-key encrypted session key
	tagSKESK      = 3  // symmetric-key (passphrase) encrypted session key
	tagCompressed = 8  // compressed data (gpg --store -z, or a signed-and-compressed file)
	tagMarker     = 10 // "PGP" marker some implementations put first
	tagSEIPD      = 18 // symmetrically encrypted integrity protected data (v1 MDC, v2 AEAD)
	tagAEAD       = 20 // GnuPG 2.4 / draft "OCB encrypted data"
)

// IsEncrypted reports whether head, the first bytes of a file, looks like an
// OpenPGP message, so that files are routed to Decrypt by content and not
// only by a .pgp/.gpg/.asc extension. It accepts the armored form (after an
// optional UTF-8 BOM and whitespace) and binary messages starting with a
// session-key, compressed, marker or encrypted-data packet.
//
// The binary check also validates the packet header and the version (or
// algorithm) byte that follows, because the tag byte alone collides with
// ordinary UTF-8 text: a CSV starting with "É" begins with 0xC3, which is
// also the new-format header of a SKESK packet. The legacy encrypted packet
// without integrity protection (tag 9) is deliberately not recognized: its
// header byte 0xC9 is Latin-1 "É" and it carries no version byte to check;
// such files are rejected by Decrypt anyway.
func IsEncrypted(head []byte) bool {
	if looksArmored(head) {
		return true
	}
	tag, body, ok := packetHeader(head)
	if !ok || len(body) == 0 {
		return false
	}
	switch tag {
	case tagPKESK:
		return body[0] == 3 || body[0] == 6
	case tagSKESK:
		return body[0] == 4 || body[0] == 5 || body[0] == 6
	case tagCompressed:
		return body[0] <= 3 // uncompressed, ZIP, ZLIB, BZip2
	case tagMarker:
		return bytes.HasPrefix(body, []byte("PGP"))
	case tagSEIPD:
		return body[0] == 1 || body[0] == 2
	case tagAEAD:
		return body[0] == 1
	}
	return false
}

// looksArmored reports whether b starts, after an optional UTF-8 BOM and
// whitespace, with the armor header of an OpenPGP message.
func looksArmored(b []byte) bool {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	b = bytes.TrimLeft(b, " \t\r\n")
	return bytes.HasPrefix(b, []byte(armorMessageStart))
}

// packetHeader parses the OpenPGP packet header at the start of b and
// returns the tag and whatever of the body b holds.
func packetHeader(b []byte) (tag byte, body []byte, ok bool) {
	if len(b) < 2 || b[0]&0x80 == 0 {
		return 0, nil, false
	}
	if b[0]&0x40 == 0 { // old format: 10TTTTLL
		tag = (b[0] >> 2) & 0x0f
		var n int
		switch b[0] & 3 {
		case 0:
			n = 1
		case 1:
			n = 2
		case 2:
			n = 4
		case 3:
			n = 0 // indeterminate length
		}
		if len(b) < 1+n {
			return 0, nil, false
		}
		return tag, b[1+n:], true
	}
	tag = b[0] & 0x3f // new format: 11TTTTTT
	switch l := b[1]; {
	case l < 192, l >= 224 && l < 255: // one-octet or partial length
		return tag, b[2:], true
	case l < 224:
		if len(b) < 3 {
			return 0, nil, false
		}
		return tag, b[3:], true
	default: // 255: five-octet length
		if len(b) < 6 {
			return 0, nil, false
		}
		return tag, b[6:], true
	}
}

// Decrypt reads an OpenPGP message from src, armored or binary, compressed
// or not, and writes its plaintext to dst, returning the number of bytes
// written. Signed-and-encrypted messages are accepted; signatures are not
// verified (customers sign with keys roster does not know) and a bad or
// unknown signature is not an error.
//
// The plaintext is streamed: memory use does not depend on the file size.
// limit bounds the decrypted, decompressed output; above it Decrypt stops
// and returns an error wrapping ErrTooLarge, which defeats compression
// bombs (go-crypto's own decompression limit is set as a backstop too).
//
// A file encrypted to another key, with a passphrase, malformed, truncated
// or modified after encryption yields an error wrapping ErrDecryptFailed
// whose message is meant for the customer (it names the key ids involved).
// A file that is not an encrypted OpenPGP message at all yields
// ErrNotEncrypted.
//
// IMPORTANT: integrity (MDC or AEAD tag) is only verified when the end of
// the message is reached, after the plaintext has been written to dst. The
// contents of dst must not be used unless Decrypt returned a nil error:
// write to a temporary file, and move it into place (or parse it) only on
// success; discard it otherwise.
//
// ctx is checked between reads, so cancellation stops a long decryption
// promptly with ctx's error.
func Decrypt(ctx context.Context, dst io.Writer, src io.Reader, kr *Keyring, limit int64) (n int64, err error) {
	if kr == nil || len(kr.entities) == 0 {
		return 0, fmt.Errorf("%w: no keyring given", ErrInvalidKey)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("decrypt: limit must be positive, got %d", limit)
	}
	in := &ctxReader{ctx: ctx, r: src}
	br := bufio.NewReaderSize(in, 4096)
	head, _ := br.Peek(SniffLen)
	if in.err != nil {
		return 0, fmt.Errorf("decrypt: reading input: %w", in.err)
	}
	if len(head) == 0 {
		return 0, fmt.Errorf("%w: the file is empty", ErrNotEncrypted)
	}

	var msg io.Reader = br
	if looksArmored(head) {
		block, err := armor.Decode(br)
		if err != nil {
			if in.err != nil {
				return 0, fmt.Errorf("decrypt: reading input: %w", in.err)
			}
			return 0, fmt.Errorf("%w: malformed armor: %v", ErrDecryptFailed, err)
		}
		msg = block.Body
	} else if head[0]&0x80 == 0 {
		// Binary OpenPGP always starts with a byte >= 0x80; this is text
		// (a plain CSV, or an armored block of another type).
		if t := armorType(head); t != "" {
			return 0, fmt.Errorf("%w: the file is an armored %q block", ErrNotEncrypted, t)
		}
		return 0, fmt.Errorf("%w: the file looks like plain text", ErrNotEncrypted)
	}

	rec := &recordingKeyRing{el: kr.entities}
	// The library limit counts the decompressed packet stream, which is a
	// little more than the plaintext (literal data header, partial length
	// headers, trailing signatures), and it fails when the count is merely
	// reached. Give it slack: it is only a backstop against data that is
	// decompressed but never reaches the output loop below (e.g. packets
	// after the literal data), the exact limit is enforced there.
	backstop := limit
	if backstop < math.MaxInt64/2 {
		backstop += limit/128 + 1<<20
	}
	cfg := &packet.Config{MaxDecompressedMessageSize: &backstop}

	md, err := openpgp.ReadMessage(msg, rec, rec.prompt, cfg)
	if err != nil {
		return 0, classify(err, in, rec, kr, false)
	}
	if !md.IsEncrypted {
		return 0, fmt.Errorf("%w: the file is an OpenPGP message but it is not encrypted (signed or compressed only)", ErrNotEncrypted)
	}

	buf := make([]byte, 32*1024)
	for {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("decrypt: %w", err)
		}
		nr, rerr := md.UnverifiedBody.Read(buf)
		if nr > 0 {
			if int64(nr) > limit-n {
				return n, fmt.Errorf("%w: plaintext is larger than %d bytes", ErrTooLarge, limit)
			}
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, fmt.Errorf("decrypt: writing plaintext: %w", werr)
			}
		}
		if rerr == io.EOF {
			// EOF from UnverifiedBody is returned only after go-crypto
			// has checked the MDC / final AEAD tag.
			return n, nil
		}
		if rerr != nil {
			return n, classify(rerr, in, rec, kr, true)
		}
	}
}

// armorType returns the type of an armor header line at the start of b
// ("PGP PUBLIC KEY BLOCK"), or "".
func armorType(b []byte) string {
	b = bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), " \t\r\n")
	const start = "-----BEGIN "
	if !bytes.HasPrefix(b, []byte(start)) {
		return ""
	}
	b = b[len(start):]
	if i := bytes.Index(b, []byte("-----")); i > 0 {
		return string(b[:i])
	}
	return ""
}

// errPassphraseEncrypted is returned by the prompt to stop ReadMessage when
// the only way into a message is a passphrase.
var errPassphraseEncrypted = errors.New("message is passphrase-encrypted")

// classify maps go-crypto and I/O errors to this package's sentinels with a
// message that tells the customer what to fix. afterKey reports whether the
// session key had already been recovered, i.e. the failure concerns the
// encrypted data itself.
func classify(err error, in *ctxReader, rec *recordingKeyRing, kr *Keyring, afterKey bool) error {
	// Our own side first: an I/O error or cancellation while reading src
	// surfaces from go-crypto as a parsing error and must not be blamed on
	// the customer's file.
	if in.err != nil {
		return fmt.Errorf("decrypt: reading input: %w", in.err)
	}
	if errors.Is(err, pgperrors.ErrMessageTooLarge) {
		return fmt.Errorf("%w: decompressed data is larger than the limit", ErrTooLarge)
	}
	ours := strings.Join(prefixed(kr.KeyIDs()), ", ")
	if afterKey {
		// MDC mismatch/missing, AEAD tag failure, or a parse error inside
		// the encrypted data (go-crypto deliberately collapses those into
		// one generic error to avoid decryption oracles).
		return fmt.Errorf("%w: integrity check failed: the file was changed or truncated after it was encrypted (%v)", ErrDecryptFailed, err)
	}
	switch {
	case errors.Is(err, errPassphraseEncrypted):
		return fmt.Errorf("%w: the file is encrypted with a passphrase (gpg --symmetric), not to this tenant's key %s", ErrDecryptFailed, ours)
	case errors.Is(err, pgperrors.ErrKeyIncorrect):
		return keyMismatch(rec, ours)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: the file is truncated or not an OpenPGP message", ErrDecryptFailed)
	}
	var unsupported pgperrors.UnsupportedError
	if errors.As(err, &unsupported) && strings.Contains(string(unsupported), "integrity protected") {
		return fmt.Errorf("%w: the file uses legacy encryption without integrity protection (no MDC); encrypt it with a current GnuPG", ErrDecryptFailed)
	}
	var decErr pgperrors.DecryptWithSessionKeyError
	var sigErr pgperrors.SignatureError
	if errors.As(err, &decErr) || errors.As(err, &sigErr) {
		return fmt.Errorf("%w: integrity check failed: the file was changed after it was encrypted (%v)", ErrDecryptFailed, err)
	}
	return fmt.Errorf("%w: not a valid OpenPGP encrypted message: %v", ErrDecryptFailed, err)
}

// keyMismatch explains an ErrKeyIncorrect from go-crypto using the
// recipient key ids the message asked the keyring for.
func keyMismatch(rec *recordingKeyRing, ours string) error {
	var named, mine []string
	for _, id := range rec.asked {
		if len(rec.el.KeysById(id)) > 0 {
			mine = append(mine, "0x"+keyID(id))
		} else {
			named = append(named, "0x"+keyID(id))
		}
	}
	switch {
	case len(mine) > 0:
		return fmt.Errorf("%w: the file is encrypted to this tenant's key %s but its session key cannot be decrypted: the file is damaged", ErrDecryptFailed, strings.Join(mine, ", "))
	case len(named) > 0:
		return fmt.Errorf("%w: the file is encrypted to key %s but this tenant's key is %s; re-encrypt it with the public key roster provided", ErrDecryptFailed, strings.Join(named, ", "), ours)
	case rec.wildcard:
		return fmt.Errorf("%w: the file hides its recipient (gpg --throw-keyids) and this tenant's key %s cannot decrypt it", ErrDecryptFailed, ours)
	}
	return fmt.Errorf("%w: the file is not encrypted to any key usable here (this tenant's key is %s)", ErrDecryptFailed, ours)
}

func prefixed(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = "0x" + id
	}
	return out
}

// recordingKeyRing is the tenant keyring as seen by openpgp.ReadMessage. It
// records which recipient key ids the message names: go-crypto returns no
// MessageDetails on failure, and the ids are what makes the "encrypted to
// the wrong key" error actionable for the customer.
type recordingKeyRing struct {
	el       openpgp.EntityList
	asked    []uint64
	wildcard bool
}

// KeysById is called once per public-key encrypted session key packet.
func (r *recordingKeyRing) KeysById(id uint64) []openpgp.Key {
	r.asked = append(r.asked, id)
	return r.el.KeysById(id)
}

// KeysByIdUsage is only used to look up signers.
func (r *recordingKeyRing) KeysByIdUsage(id uint64, usage byte) []openpgp.Key {
	return r.el.KeysByIdUsage(id, usage)
}

// DecryptionKeys is used for anonymous recipients (key id 0).
func (r *recordingKeyRing) DecryptionKeys() []openpgp.Key {
	r.wildcard = true
	return r.el.DecryptionKeys()
}

// prompt is go-crypto's callback when no unlocked key fits. Our keys are
// always unlocked, so it is only reached for passphrase-encrypted messages;
// we never guess passphrases.
func (r *recordingKeyRing) prompt(keys []openpgp.Key, symmetric bool) ([]byte, error) {
	if symmetric {
		return nil, errPassphraseEncrypted
	}
	return nil, pgperrors.ErrKeyIncorrect
}

// ctxReader makes reads from src honour ctx and remembers the first real
// error from src, so classify can tell I/O trouble from a bad file.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		if c.err == nil {
			c.err = err
		}
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}
