package decrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

const (
	testPassphrase = "test-only-passphrase"
	usersCSV       = "email,first_name,last_name\nada@example.com,Ada,Lovelace\n"
	fixtureDir     = "../../fixtures/pgp"
	fixturePub     = "test-only-tenant-key.pub.asc"
	fixtureSec     = "test-only-tenant-key.sec.asc"
)

type testKey struct {
	kp *KeyPair
	kr *Keyring
}

var (
	keysMu sync.Mutex
	keys   = map[string]testKey{}
)

// tenantKey returns a key pair and its unlocked keyring, generated once per
// tenant name for the whole test binary (the S2K derivation is deliberately
// slow).
func tenantKey(t testing.TB, tenant string) testKey {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[tenant]; ok {
		return k
	}
	kp, err := GenerateKey(tenant, []byte(testPassphrase), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	kr, err := LoadPrivate(kp.PrivateArmored, []byte(testPassphrase))
	if err != nil {
		t.Fatalf("LoadPrivate: %v", err)
	}
	k := testKey{kp, kr}
	keys[tenant] = k
	return k
}

func decryptBytes(t testing.TB, ciphertext []byte, kr *Keyring, limit int64) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	n, err := Decrypt(context.Background(), &out, bytes.NewReader(ciphertext), kr, limit)
	if n != int64(out.Len()) {
		t.Errorf("Decrypt returned n=%d but wrote %d bytes", n, out.Len())
	}
	return out.Bytes(), err
}

// bigCSV is a plaintext large enough to need several partial-length chunks
// and to put the middle of the ciphertext well inside the encrypted data.
func bigCSV(rows int) []byte {
	var b bytes.Buffer
	b.WriteString("email,first_name,last_name\n")
	for i := range rows {
		fmt.Fprintf(&b, "user%d@example.com,First%d,Last%d\n", i, i, i*7919%1000)
	}
	return b.Bytes()
}

func TestGenerateKey(t *testing.T) {
	k := tenantKey(t, "acme")
	if !regexp.MustCompile(`^[0-9A-F]{16}$`).MatchString(k.kp.KeyID) {
		t.Errorf("KeyID = %q, want 16 upper-case hex digits", k.kp.KeyID)
	}
	if !regexp.MustCompile(`^[0-9A-F]{40}$`).MatchString(k.kp.Fingerprint) {
		t.Errorf("Fingerprint = %q, want 40 upper-case hex digits", k.kp.Fingerprint)
	}
	if !strings.HasPrefix(k.kp.PublicArmored, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		t.Errorf("PublicArmored does not start with a public key armor header")
	}
	if !bytes.HasPrefix(k.kp.PrivateArmored, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
		t.Errorf("PrivateArmored does not start with a private key armor header")
	}
	if got := k.kr.KeyIDs(); len(got) != 1 || got[0] != k.kp.KeyID {
		t.Errorf("KeyIDs() = %v, want [%s]", got, k.kp.KeyID)
	}

	// The stored key must really be passphrase-protected.
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(k.kp.PrivateArmored))
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range privateKeys(el[0]) {
		if !pk.Encrypted {
			t.Errorf("private key %X is stored unencrypted", pk.KeyId)
		}
	}

	for _, tc := range []struct {
		name, tenant, pass string
		want               error
	}{
		{"empty passphrase", "acme", "", ErrBadPassphrase},
		{"empty tenant", "", "x", ErrInvalidKey},
		{"angle brackets in tenant", "a<b>", "x", ErrInvalidKey},
		{"newline in tenant", "a\nb", "x", ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := GenerateKey(tc.tenant, []byte(tc.pass), time.Now()); !errors.Is(err, tc.want) {
				t.Errorf("GenerateKey(%q) error = %v, want %v", tc.tenant, err, tc.want)
			}
		})
	}
}

// TestGenerateKeyPacketsForGnuPG checks what the key advertises, as GnuPG
// itself parses it: AES-256 S2K protection, and no AEAD feature so that
// GnuPG 2.4 keeps producing the MDC format 2.2 also produces.
func TestGenerateKeyPacketsForGnuPG(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")

	sec := string(g.run(bytes.NewReader(k.kp.PrivateArmored), "--list-packets"))
	if !strings.Contains(sec, "S2K, algo: 9,") { // 9 = AES-256
		t.Errorf("secret key is not protected with AES-256:\n%s", sec)
	}
	if !strings.Contains(sec, "iter+salt S2K") {
		t.Errorf("secret key does not use iterated+salted S2K:\n%s", sec)
	}

	pub := string(g.run(strings.NewReader(k.kp.PublicArmored), "--list-packets"))
	for _, want := range []string{"pref-sym-algos: 9 7", "pref-hash-algos: 8 10", "pref-zip-algos: 2 1 0", "features: 01"} {
		if !strings.Contains(pub, want) {
			t.Errorf("public key packets lack %q:\n%s", want, pub)
		}
	}
	if strings.Contains(pub, "aead") {
		t.Errorf("public key advertises AEAD:\n%s", pub)
	}

	g.importKey(k.kp.PublicArmored)
	colons := string(g.run(nil, "--with-colons", "--fingerprint", "--list-keys", k.kp.Fingerprint))
	if !strings.Contains(colons, "fpr:::::::::"+k.kp.Fingerprint+":") {
		t.Errorf("gpg does not list fingerprint %s:\n%s", k.kp.Fingerprint, colons)
	}
	if !regexp.MustCompile(`(?m)^sub:[^:]*:255:18:` + k.kp.KeyID + `:`).MatchString(colons) {
		t.Errorf("gpg does not list cv25519 encryption subkey %s:\n%s", k.kp.KeyID, colons)
	}
}

func TestLoadPrivate(t *testing.T) {
	k := tenantKey(t, "acme")
	for _, tc := range []struct {
		name    string
		armored []byte
		pass    string
		want    error
	}{
		{"wrong passphrase", k.kp.PrivateArmored, "not-the-passphrase", ErrBadPassphrase},
		{"missing passphrase", k.kp.PrivateArmored, "", ErrBadPassphrase},
		{"public key instead of private", []byte(k.kp.PublicArmored), testPassphrase, ErrInvalidKey},
		{"garbage", []byte("hello"), testPassphrase, ErrInvalidKey},
		{"unprotected private key", unprotectedKey(t), testPassphrase, ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := LoadPrivate(tc.armored, []byte(tc.pass))
			if !errors.Is(err, tc.want) || kr != nil {
				t.Fatalf("LoadPrivate = %v, %v; want error %v", kr, err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}

func unprotectedKey(t testing.TB) []byte {
	e, err := openpgp.NewEntity("x", "", "", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519})
	if err != nil {
		t.Fatal(err)
	}
	return armorPrivate(t, e)
}

func armorPrivate(t testing.TB, e *openpgp.Entity) []byte {
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.Bytes()
}

// TestDecryptGnuPG is the interoperability matrix: messages produced by the
// installed gpg in the shapes customers send.
func TestDecryptGnuPG(t *testing.T) {
	g := newGPG(t)
	gpgVersion(t)
	k := tenantKey(t, "acme")
	other := tenantKey(t, "other")
	g.importKey(k.kp.PublicArmored)
	g.importKey(other.kp.PublicArmored)
	signer := g.genSigningKey()
	big := bigCSV(5000)

	for _, tc := range []struct {
		name      string
		plaintext []byte
		args      []string
	}{
		{"binary uncompressed", []byte(usersCSV), []string{"--compress-algo", "none"}},
		{"binary zlib", []byte(usersCSV), []string{"--compress-algo", "zlib"}},
		{"binary zip", []byte(usersCSV), []string{"--compress-algo", "zip"}},
		{"binary default compression", []byte(usersCSV), nil},
		{"armored uncompressed", []byte(usersCSV), []string{"--armor", "--compress-algo", "none"}},
		{"armored zlib", []byte(usersCSV), []string{"--armor", "--compress-algo", "zlib"}},
		{"signed and encrypted", []byte(usersCSV), []string{"--sign", "--local-user", signer}},
		{"signed and encrypted armored uncompressed", []byte(usersCSV), []string{"--sign", "--local-user", signer, "--armor", "--compress-algo", "none"}},
		{"large binary uncompressed", big, []string{"--compress-algo", "none"}},
		{"large armored zlib signed", big, []string{"--armor", "--compress-algo", "zlib", "-z", "9", "--sign", "--local-user", signer}},
		{"several recipients", []byte(usersCSV), []string{"--recipient", other.kp.KeyID}},
		{"hidden recipient", []byte(usersCSV), []string{"--throw-keyids"}},
		{"aes128 cipher", []byte(usersCSV), []string{"--cipher-algo", "AES128"}},
		{"empty file", nil, nil},
		{"utf-8 and crlf", []byte("email,name\r\nzoe@example.com,Zoë Åström\r\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := g.encrypt(tc.plaintext, append([]string{"--recipient", k.kp.KeyID}, tc.args...)...)
			if !IsEncrypted(ct) {
				t.Errorf("IsEncrypted(gpg output) = false; head % x", ct[:min(len(ct), 16)])
			}
			got, err := decryptBytes(t, ct, k.kr, 10<<20)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, tc.plaintext) {
				t.Fatalf("Decrypt = %q..., want %q...", got[:min(len(got), 80)], tc.plaintext[:min(len(tc.plaintext), 80)])
			}
		})
	}
}

func TestDecryptRejects(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	other := tenantKey(t, "other")
	g.importKey(k.kp.PublicArmored)
	g.importKey(other.kp.PublicArmored)
	big := bigCSV(500)

	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	// flipArmored changes one base64 character in the middle of the armor
	// body to another valid one, so the armor still decodes.
	flipArmored := func(b []byte) []byte {
		c := bytes.Clone(b)
		for i := len(c) / 2; i < len(c); i++ {
			if c[i] >= 'A' && c[i] <= 'Y' {
				c[i]++
				return c
			}
		}
		t.Fatal("no base64 letter to flip")
		return nil
	}
	binUncompressed := g.encrypt(big, "--recipient", k.kp.KeyID, "--compress-algo", "none")
	binZlib := g.encrypt(big, "--recipient", k.kp.KeyID, "--compress-algo", "zlib")
	armored := g.encrypt(big, "--recipient", k.kp.KeyID, "--armor", "--compress-algo", "none")
	toOther := g.encrypt([]byte(usersCSV), "--recipient", other.kp.KeyID)
	symmetric := g.run(strings.NewReader(usersCSV), "--pinentry-mode", "loopback", "--passphrase", "secret", "--symmetric", "--output", "-")
	signedOnly := g.run(strings.NewReader(usersCSV), "--local-user", g.genSigningKey(), "--sign", "--output", "-")

	for _, tc := range []struct {
		name       string
		in         []byte
		want       error
		msgHas     []string
		allowWrite bool // plaintext may have been streamed before the failure
	}{
		{"flipped byte mid ciphertext, uncompressed", flip(binUncompressed, len(binUncompressed)/2), ErrDecryptFailed, []string{"integrity check failed"}, true},
		{"flipped byte mid ciphertext, zlib", flip(binZlib, len(binZlib)/2), ErrDecryptFailed, []string{"integrity check failed"}, true},
		{"flipped last byte (MDC)", flip(binUncompressed, len(binUncompressed)-1), ErrDecryptFailed, []string{"integrity check failed"}, true},
		{"flipped byte in armored body", flipArmored(armored), ErrDecryptFailed, []string{"integrity check failed"}, true},
		{"flipped byte in session key packet", flip(binUncompressed, 20), ErrDecryptFailed, []string{"this tenant's key 0x" + k.kp.KeyID}, false},
		{"truncated", binUncompressed[:len(binUncompressed)-30], ErrDecryptFailed, []string{"truncated"}, true},
		{"truncated in header", binUncompressed[:40], ErrDecryptFailed, nil, false},
		{"encrypted to another key", toOther, ErrDecryptFailed, []string{"encrypted to key 0x" + other.kp.KeyID, "this tenant's key is 0x" + k.kp.KeyID}, false},
		{"passphrase encrypted", symmetric, ErrDecryptFailed, []string{"passphrase", k.kp.KeyID}, false},
		{"signed only", signedOnly, ErrNotEncrypted, nil, false},
		{"plain csv", []byte(usersCSV), ErrNotEncrypted, []string{"plain text"}, false},
		{"public key block", []byte(k.kp.PublicArmored), ErrNotEncrypted, []string{"PGP PUBLIC KEY BLOCK"}, false},
		{"empty", nil, ErrNotEncrypted, []string{"empty"}, false},
		{"binary garbage", bytes.Repeat([]byte{0xff, 0x00, 0x13}, 100), ErrDecryptFailed, nil, false},
		{"armor header only", []byte(armorMessageStart + "\n\n"), ErrDecryptFailed, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decryptBytes(t, tc.in, k.kr, 10<<20)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt error = %v, want %v", err, tc.want)
			}
			for _, s := range tc.msgHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if len(got) > 0 && !tc.allowWrite {
				t.Errorf("Decrypt wrote %d bytes before failing", len(got))
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestDecryptAEADGnuPG needs GnuPG >= 2.3, the first to write OCB
// ("AEAD") encrypted data; 2.2 cannot be made to.
func TestDecryptAEADGnuPG(t *testing.T) {
	g := newGPG(t)
	if major, minor := gpgVersion(t); major < 2 || major == 2 && minor < 3 {
		t.Skipf("gpg %d.%d cannot write AEAD/OCB messages (needs >= 2.3); AEAD decryption is covered by TestDecryptAEADGoCrypto", major, minor)
	}
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)
	// Our key does not advertise AEAD, so it has to be forced.
	ct, err := g.try(strings.NewReader(usersCSV), "--recipient", k.kp.KeyID, "--force-ocb", "--encrypt", "--output", "-")
	if err != nil {
		ct = g.run(strings.NewReader(usersCSV), "--recipient", k.kp.KeyID, "--force-aead", "--encrypt", "--output", "-")
	}
	if pk := string(g.run(bytes.NewReader(ct), "--list-packets", "--pinentry-mode", "loopback", "--passphrase", "")); !strings.Contains(pk, "aead") && !strings.Contains(pk, "AEAD") && !strings.Contains(pk, "ocb") {
		t.Logf("note: packet listing does not mention AEAD:\n%s", pk)
	}
	got, err := decryptBytes(t, ct, k.kr, 1<<20)
	if err != nil || string(got) != usersCSV {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	c := bytes.Clone(ct)
	c[len(c)/2+10] ^= 1
	if _, err := decryptBytes(t, c, k.kr, 1<<20); !errors.Is(err, ErrDecryptFailed) {
		t.Fatalf("tampered AEAD message: error = %v, want ErrDecryptFailed", err)
	}
}

// TestDecryptAEADGoCrypto covers the AEAD (SEIPDv2) code path, including
// tag failures, where the installed gpg cannot produce such messages. It is
// the one place ciphertext is made by go-crypto rather than gpg, and it
// needs a key that advertises SEIPDv2, which GenerateKey deliberately never
// makes.
func TestDecryptAEADGoCrypto(t *testing.T) {
	for _, mode := range []packet.AEADMode{packet.AEADModeOCB, packet.AEADModeEAX, packet.AEADModeGCM} {
		t.Run(fmt.Sprintf("mode %d", mode), func(t *testing.T) {
			cfg := &packet.Config{
				Algorithm:     packet.PubKeyAlgoEdDSA,
				Curve:         packet.Curve25519,
				DefaultCipher: packet.CipherAES256,
				AEADConfig:    &packet.AEADConfig{DefaultMode: mode, ChunkSize: 1 << 10},
			}
			e, err := openpgp.NewEntity("aead", "", "", cfg)
			if err != nil {
				t.Fatal(err)
			}
			kr := &Keyring{entities: openpgp.EntityList{e}}
			plaintext := bigCSV(200)
			var ct bytes.Buffer
			w, err := openpgp.Encrypt(&ct, []*openpgp.Entity{e}, nil, nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plaintext)
			w.Close()
			assertSEIPDv2(t, ct.Bytes(), e)

			got, err := decryptBytes(t, ct.Bytes(), kr, 1<<20)
			if err != nil || !bytes.Equal(got, plaintext) {
				t.Fatalf("Decrypt: %v (got %d bytes, want %d)", err, len(got), len(plaintext))
			}
			for _, at := range []int{ct.Len() / 2, ct.Len() - 1} {
				c := bytes.Clone(ct.Bytes())
				c[at] ^= 1
				if _, err := decryptBytes(t, c, kr, 1<<20); !errors.Is(err, ErrDecryptFailed) || !strings.Contains(err.Error(), "integrity") {
					t.Errorf("flip at %d: error = %v, want integrity ErrDecryptFailed", at, err)
				}
			}
		})
	}
}

func assertSEIPDv2(t *testing.T, ct []byte, e *openpgp.Entity) {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(ct))
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("no encrypted data packet: %v", err)
		}
		if se, ok := p.(*packet.SymmetricallyEncrypted); ok {
			if se.Version != 2 {
				t.Fatalf("go-crypto wrote SEIPD v%d, want v2", se.Version)
			}
			return
		}
	}
}

// zeros is an endless source of zero bytes, to feed a compression bomb to
// gpg without holding it in memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestDecryptCompressionBomb(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)

	const bombSize = 50 << 20
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"zlib", []string{"--compress-algo", "zlib", "-z", "9"}},
		{"zip armored", []string{"--compress-algo", "zip", "-z", "9", "--armor"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bomb := g.run(io.LimitReader(zeros{}, bombSize), append([]string{"--recipient", k.kp.KeyID, "--encrypt", "--output", "-"}, tc.args...)...)
			t.Logf("%d MiB of zeros encrypted to %d bytes", bombSize>>20, len(bomb))

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			var sink countingWriter
			n, err := Decrypt(context.Background(), &sink, bytes.NewReader(bomb), k.kr, 1<<20)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decrypt error = %v, want ErrTooLarge", err)
			}
			if n > 1<<20 || int64(sink) != n {
				t.Errorf("Decrypt wrote %d bytes (reported %d), limit 1 MiB", sink, n)
			}
			if elapsed > 5*time.Second {
				t.Errorf("Decrypt took %v to reject the bomb", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Errorf("Decrypt allocated %d MiB for a 1 MiB limit", alloc>>20)
			}
		})
	}
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

func TestDecryptLimitExact(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)
	for _, compress := range []string{"none", "zlib"} {
		ct := g.encrypt([]byte(usersCSV), "--recipient", k.kp.KeyID, "--compress-algo", compress)
		if got, err := decryptBytes(t, ct, k.kr, int64(len(usersCSV))); err != nil || string(got) != usersCSV {
			t.Errorf("%s: limit == size: %q, %v", compress, got, err)
		}
		if _, err := decryptBytes(t, ct, k.kr, int64(len(usersCSV))-1); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: limit == size-1: error = %v, want ErrTooLarge", compress, err)
		}
	}
}

func TestDecryptContext(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)
	ct := g.encrypt(bigCSV(100), "--recipient", k.kp.KeyID)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Decrypt(ctx, io.Discard, bytes.NewReader(ct), k.kr, 1<<20)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrDecryptFailed) {
		t.Fatalf("Decrypt with cancelled context: %v, want context.Canceled only", err)
	}
}

func TestDecryptSourceError(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)
	ct := g.encrypt(bigCSV(2000), "--recipient", k.kp.KeyID, "--compress-algo", "none")
	boom := errors.New("sftp connection lost")
	src := io.MultiReader(bytes.NewReader(ct[:len(ct)/2]), errReader{boom})
	_, err := Decrypt(context.Background(), io.Discard, src, k.kr, 1<<20)
	if !errors.Is(err, boom) || errors.Is(err, ErrDecryptFailed) {
		t.Fatalf("Decrypt with failing source: %v, want the source error, not ErrDecryptFailed", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestIsEncrypted(t *testing.T) {
	g := newGPG(t)
	k := tenantKey(t, "acme")
	g.importKey(k.kp.PublicArmored)
	armored := g.encrypt([]byte(usersCSV), "--recipient", k.kp.KeyID, "--armor")
	binary := g.encrypt([]byte(usersCSV), "--recipient", k.kp.KeyID)
	symmetric := g.run(strings.NewReader(usersCSV), "--pinentry-mode", "loopback", "--passphrase", "secret", "--symmetric", "--output", "-")
	compressed := g.run(strings.NewReader(usersCSV), "--compress-algo", "zlib", "--store", "--output", "-")
	literal := g.run(strings.NewReader(usersCSV), "--compress-algo", "none", "--store", "--output", "-")

	utf16 := func(bom []byte, s string, be bool) []byte {
		b := bytes.Clone(bom)
		for _, r := range s {
			if be {
				b = append(b, byte(r>>8), byte(r))
			} else {
				b = append(b, byte(r), byte(r>>8))
			}
		}
		return b
	}
	for _, tc := range []struct {
		name string
		head []byte
		want bool
	}{
		{"gpg armored", armored, true},
		{"armored after BOM and blank lines", append([]byte("\xef\xbb\xbf\r\n\n"), armored...), true},
		{"gpg binary (PKESK)", binary, true},
		{"gpg binary first 16 bytes", binary[:16], true},
		{"gpg symmetric (SKESK)", symmetric, true},
		{"gpg compressed only", compressed, true},
		{"new-format SEIPD v1", []byte{0xd2, 0xe0, 0x01, 0xaa}, true},
		{"new-format SEIPD v2 five-octet length", []byte{0xd2, 0xff, 0, 0, 1, 0, 0x02, 0x09}, true},
		{"OCB encrypted data (tag 20)", []byte{0xd4, 0x40, 0x01, 0x09, 0x02}, true},
		{"marker packet", []byte{0xa8, 0x03, 'P', 'G', 'P', 0x84}, true},
		{"literal data only", literal, false},
		{"plain csv", []byte(usersCSV), false},
		{"utf-8 csv starting with É", []byte("Émile,Zola\n"), false},
		{"latin-1 csv starting with É", []byte("\xc9mile,Zola\n"), false},
		{"utf-8 BOM csv", []byte("\xef\xbb\xbfemail,first_name\n"), false},
		{"utf-16le BOM text", utf16([]byte{0xff, 0xfe}, "email,first_name\n", false), false},
		{"utf-16be BOM text", utf16([]byte{0xfe, 0xff}, "email,first_name\n", true), false},
		{"armored public key", []byte(k.kp.PublicArmored), false},
		{"truncated armor header", []byte("-----BEGIN PGP MESS"), false},
		{"empty", nil, false},
		{"single header byte", []byte{0x85}, false},
		{"PKESK with bad version", []byte{0x84, 0x5e, 0x07, 0x00}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := tc.head[:min(len(tc.head), SniffLen)]
			if got := IsEncrypted(head); got != tc.want {
				t.Errorf("IsEncrypted(% x) = %v, want %v", head[:min(len(head), 12)], got, tc.want)
			}
		})
	}
}

// TestFixtures checks the committed fixtures still decrypt, since other
// packages and the demo rely on them.
func TestFixtures(t *testing.T) {
	sec, err := os.ReadFile(filepath.Join(fixtureDir, fixtureSec))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := LoadPrivate(sec, []byte(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"users.csv.gpg", "users.csv.asc"} {
		t.Run(name, func(t *testing.T) {
			ct, err := os.ReadFile(filepath.Join(fixtureDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if !IsEncrypted(ct[:min(len(ct), SniffLen)]) {
				t.Error("IsEncrypted = false")
			}
			got, err := decryptBytes(t, ct, kr, 1<<20)
			if err != nil || string(got) != usersCSV {
				t.Fatalf("Decrypt = %q, %v; want %q", got, err, usersCSV)
			}
		})
	}
}

// TestRegenerateFixtures rewrites fixtures/pgp when
// ROSTER_REGEN_PGP_FIXTURES=1; see fixtures/pgp/README.md.
func TestRegenerateFixtures(t *testing.T) {
	if os.Getenv("ROSTER_REGEN_PGP_FIXTURES") != "1" {
		t.Skip("set ROSTER_REGEN_PGP_FIXTURES=1 to regenerate fixtures/pgp")
	}
	kp, err := GenerateKey("test-only", []byte(testPassphrase), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(fixtureDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fixturePub, []byte(kp.PublicArmored))
	write(fixtureSec, kp.PrivateArmored)
	write("users.csv", []byte(usersCSV))

	// The same commands as in the README, run in a scratch GNUPGHOME.
	g := newGPG(t)
	g.run(nil, "--import", filepath.Join(fixtureDir, fixturePub))
	in := filepath.Join(fixtureDir, "users.csv")
	g.run(nil, "--recipient", kp.KeyID, "--output", filepath.Join(fixtureDir, "users.csv.gpg"), "--encrypt", in)
	g.run(nil, "--recipient", kp.KeyID, "--armor", "--output", filepath.Join(fixtureDir, "users.csv.asc"), "--encrypt", in)
	t.Logf("fixture key id %s, fingerprint %s", kp.KeyID, kp.Fingerprint)
}

// FuzzDecrypt feeds arbitrary bytes to IsEncrypted and Decrypt: they must
// never panic, and every Decrypt failure must be classified.
func FuzzDecrypt(f *testing.F) {
	sec, err := os.ReadFile(filepath.Join(fixtureDir, fixtureSec))
	if err != nil {
		f.Fatal(err)
	}
	kr, err := LoadPrivate(sec, []byte(testPassphrase))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"users.csv.gpg", "users.csv.asc", "users.csv", fixturePub} {
		b, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xd2, 0xe0, 0x01})
	f.Add([]byte{0xa8, 0x03, 'P', 'G', 'P'})
	f.Fuzz(func(t *testing.T, data []byte) {
		IsEncrypted(data)
		n, err := Decrypt(context.Background(), io.Discard, bytes.NewReader(data), kr, 1<<16)
		if err != nil {
			if !errors.Is(err, ErrDecryptFailed) && !errors.Is(err, ErrNotEncrypted) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if n > 1<<16 {
			t.Fatalf("wrote %d bytes past the limit", n)
		}
	})
}
