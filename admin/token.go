package admin

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the file in the data dir that holds the running server's
// management token. Whoever can read the data dir may manage the mirror;
// nobody else can, even through a reverse proxy on the same box that makes
// every client look like loopback.
const TokenFile = "admin-token"

// ServerURLFile is the file in the data dir that holds the URL at which
// the running server answers on this box, so that commands find a server
// whatever port it listens on.
const ServerURLFile = "server-url"

// ServerCertFile is the file in the data dir that holds the certificate
// (PEM) a server with TLS answers with, so that commands on this box trust
// exactly it at the address in ServerURLFile, which its names need not
// cover.
const ServerCertFile = "server-cert.pem"

// WriteToken makes a new random token, stores it in dataDir (mode 0600,
// replaced atomically) and returns it. The server calls it at start.
func WriteToken(dataDir string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b[:])
	if err := writeFile(dataDir, TokenFile, token); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return token, nil
}

// WriteServerURL records in dataDir where the server answers (see
// ServerURLFile). The server calls it once it listens.
func WriteServerURL(dataDir, url string) error {
	if err := writeFile(dataDir, ServerURLFile, url); err != nil {
		return fmt.Errorf("server url: %w", err)
	}
	return nil
}

// WriteServerCert records in dataDir the certificate the server answers
// with (see ServerCertFile), or removes an earlier one when certPEM is nil.
func WriteServerCert(dataDir string, certPEM []byte) error {
	if certPEM == nil {
		if err := os.Remove(filepath.Join(dataDir, ServerCertFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("server certificate: %w", err)
		}
		return nil
	}
	if err := writeFile(dataDir, ServerCertFile, strings.TrimSpace(string(certPEM))); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	return nil
}

// ReadServerCert reads the certificate the server running on dataDir
// wrote (PEM).
func ReadServerCert(dataDir string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dataDir, ServerCertFile))
}

// ReadServerURL reads the URL the server running on dataDir wrote.
func ReadServerURL(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, ServerURLFile))
	if err != nil {
		return "", err
	}
	url := strings.TrimSpace(string(b))
	if url == "" {
		return "", fmt.Errorf("%s is empty", ServerURLFile)
	}
	return url, nil
}

// writeFile replaces dataDir/name with content atomically, mode 0600.
func writeFile(dataDir, name, content string) error {
	tmp, err := os.CreateTemp(dataDir, name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dataDir, name))
}

// ReadToken reads the token the server running on dataDir wrote.
func ReadToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, TokenFile))
	if err != nil {
		return "", fmt.Errorf("reading the server's management token (run as the user that runs the server): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// requireToken lets through only requests that carry token.
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":"management requests need the token in %s/%s","kind":"unauthorized"}`+"\n", "<data_dir>", TokenFile)
			return
		}
		next.ServeHTTP(w, r)
	})
}
