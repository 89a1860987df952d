package store

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKey is wrapped by every failure to verify the server's host key.
// It is never worth a retry.
var ErrHostKey = errors.New("host key verification failed")

// hostKeyCallback builds the mandatory host key check from cfg, and the host
// key algorithms to ask for (those known_hosts has for addr, so that a
// server with several host keys presents one we can check).
func hostKeyCallback(cfg SFTPConfig, addr string) (ssh.HostKeyCallback, []string, error) {
	if cfg.KnownHostsFile == "" && cfg.HostKeyFingerprint == "" {
		return nil, nil, errors.New("store: sftp: host key verification is required: set KnownHostsFile or HostKeyFingerprint (SHA256:...) for " + addr)
	}
	var checks []ssh.HostKeyCallback
	var algos []string
	if fp := cfg.HostKeyFingerprint; fp != "" {
		if !strings.HasPrefix(fp, "SHA256:") {
			return nil, nil, fmt.Errorf("store: sftp: HostKeyFingerprint %q: want the SHA256:... form printed by ssh-keygen -l", fp)
		}
		want := strings.TrimRight(fp, "=") // ssh-keygen prints no padding
		checks = append(checks, func(host string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != want {
				return fmt.Errorf("%w: %s presented %s key %s, not the pinned fingerprint %s", ErrHostKey, host, key.Type(), got, want)
			}
			return nil
		})
	}
	if file := cfg.KnownHostsFile; file != "" {
		kh, err := knownhosts.New(file)
		if err != nil {
			return nil, nil, fmt.Errorf("store: sftp: known_hosts: %w", err)
		}
		algos = knownAlgorithms(kh, addr)
		checks = append(checks, func(host string, remote net.Addr, key ssh.PublicKey) error {
			err := kh(host, remote, key)
			var keyErr *knownhosts.KeyError
			var revoked *knownhosts.RevokedError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &keyErr) && len(keyErr.Want) == 0:
				return fmt.Errorf("%w: %s is not in known_hosts file %s (it presented %s key %s); add it after checking that fingerprint with the server's operator",
					ErrHostKey, knownhosts.Normalize(host), file, key.Type(), ssh.FingerprintSHA256(key))
			case errors.As(err, &keyErr):
				w := keyErr.Want[0]
				return fmt.Errorf("%w: %s presented %s key %s, which does not match known_hosts file %s (line %d: %s key %s): the host key changed, or someone is intercepting the connection",
					ErrHostKey, knownhosts.Normalize(host), key.Type(), ssh.FingerprintSHA256(key), w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key))
			case errors.As(err, &revoked):
				return fmt.Errorf("%w: %s presented %s key %s, revoked in %s", ErrHostKey, knownhosts.Normalize(host), key.Type(), ssh.FingerprintSHA256(key), revoked.Revoked.String())
			default:
				return fmt.Errorf("%w: %w", ErrHostKey, err)
			}
		})
	}
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		for _, check := range checks {
			if err := check(host, remote, key); err != nil {
				return err
			}
		}
		return nil
	}, algos, nil
}

// knownAlgorithms returns the host key algorithms for the keys known_hosts
// holds for addr, or nil (the library's default) if it holds none. It asks
// the callback about a throwaway key: the mismatch lists the known ones.
func knownAlgorithms(kh ssh.HostKeyCallback, addr string) []string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	if err := kh(addr, &net.TCPAddr{IP: net.IPv4zero}, probe); !errors.As(err, &keyErr) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, k := range keyErr.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA: // one key format, three signature algorithms
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}
