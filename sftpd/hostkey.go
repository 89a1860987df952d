package sftpd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// loadOrCreateHostKey returns the host key at path, generating an ed25519
// key there on first start. The key must survive restarts: a new key makes
// every customer's client refuse to connect (or, worse, teaches customers to
// accept changed keys).
func loadOrCreateHostKey(path string, log *slog.Logger) (ssh.Signer, error) {
	// Two tries: if another replica creates the key between our read and our
	// create, the second read finds it.
	for range 2 {
		pemBytes, err := readHostKey(path, log)
		if err == nil {
			signer, err := ssh.ParsePrivateKey(pemBytes)
			if err != nil {
				return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
			}
			return signer, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		switch err := createHostKey(path); {
		case err == nil:
			log.Info("generated SSH host key", "path", path)
		case errors.Is(err, fs.ErrExist):
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("sftpd: host key %s: could not be read or created", path)
}

// readHostKey reads the key file, repairing its mode if group or others
// could read it: the key is what proves the server to customers.
func readHostKey(path string, log *slog.Logger) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sftpd: host key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("sftpd: host key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		// Chmod the open file, not the path, so a swapped path is not hit.
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("sftpd: host key %s has mode %v and cannot be made private: %w", path, perm, err)
		}
		log.Warn("SSH host key was readable by others; mode set to 0600 (consider rotating it)",
			"path", path, "old_mode", perm.String())
	}
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// createHostKey writes a new key to a temporary file and links it into place,
// which fails if the key appeared meanwhile: no one ever reads half a key,
// and a concurrent creator's key is never overwritten.
func createHostKey(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("sftpd: host key directory: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("sftpd: generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "roster sftpd host key")
	if err != nil {
		return fmt.Errorf("sftpd: encode host key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ssh_host_key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("sftpd: write host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return fmt.Errorf("sftpd: write host key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sftpd: write host key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sftpd: write host key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("sftpd: write host key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
