package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/server"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/pull"
)

// accessFlags are serve's flags for reaching it from other machines: an access token,
// TLS (ComfyUI's --tls-certfile/--tls-keyfile) and the hosts the editor may download
// models from.
type accessFlags struct {
	token, tokenFile      string
	certFile, keyFile     string
	downloadHosts         []string
	downloadHostsExplicit bool
}

func (a *accessFlags) register(fl *flag.FlagSet) {
	fl.StringVar(&a.token, "auth-token", "", "require this access `token` on every request (Authorization: Bearer TOKEN, or ?token= on GETs; the editor asks for it once)")
	fl.StringVar(&a.tokenFile, "auth-token-file", "", "read the access token from this `file` (keeps it out of the process list)")
	fl.StringVar(&a.certFile, "tls-certfile", "", "TLS certificate `file` (PEM); with --tls-keyfile the server speaks https")
	fl.StringVar(&a.keyFile, "tls-keyfile", "", "TLS private key `file` (PEM), with --tls-certfile")
	fl.Func("download-hosts", "hosts the editor may download models from, comma-separated or repeated (default "+strings.Join(pull.DefaultHosts, ",")+"; subdomains included); none turns downloads off", func(v string) error {
		a.downloadHostsExplicit = true
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				a.downloadHosts = append(a.downloadHosts, h)
			}
		}
		return nil
	})
}

// authToken returns the token from --auth-token or --auth-token-file ("" for none).
func (a *accessFlags) authToken() (string, error) {
	if a.token != "" && a.tokenFile != "" {
		return "", errors.New("give --auth-token or --auth-token-file, not both")
	}
	if a.tokenFile == "" {
		return a.token, nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return "", fmt.Errorf("--auth-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("--auth-token-file %s: the file must hold one token (no spaces)", a.tokenFile)
	}
	return tok, nil
}

// tlsConfig loads the certificate pair, or returns nil without one.
func (a *accessFlags) tlsConfig() (*tls.Config, error) {
	if a.certFile == "" && a.keyFile == "" {
		return nil, nil
	}
	if a.certFile == "" || a.keyFile == "" {
		return nil, errors.New("--tls-certfile and --tls-keyfile go together")
	}
	cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	// HTTP/1.1 only: the server's connection limits read the request framing of
	// each connection (server.Listen), which HTTP/2 would not give them.
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}

// downloads is the server's download configuration: nil when turned off. Starters come
// from Hugging Face or the mirror in HF_ENDPOINT (whose host is then allowed too), and
// their tokenizers go where the text encoders look for them first.
func (a *accessFlags) downloads(models *folders.Paths, getenv func(string) string) *server.DownloadOptions {
	hosts := pull.DefaultHosts
	if a.downloadHostsExplicit {
		if len(a.downloadHosts) == 0 || (len(a.downloadHosts) == 1 && strings.EqualFold(a.downloadHosts[0], "none")) {
			return nil
		}
		hosts = a.downloadHosts
	}
	o := &server.DownloadOptions{Hosts: hosts, HFEndpoint: getenv(envHFEndpoint)}
	if u, err := url.Parse(o.HFEndpoint); err == nil && u.Hostname() != "" && !slices.Contains(hosts, u.Hostname()) {
		o.Hosts = append(slices.Clone(hosts), u.Hostname())
	}
	o.Tokenizers = map[string]server.TokenizerPlace{
		"clip": func() (string, bool) {
			_, err := sd.FindVocab(models)
			return sd.VocabDirs(models)[0], err == nil
		},
		"t5": func() (string, bool) {
			_, err := sd.FindT5Tokenizer(models)
			return sd.T5TokenizerDirs(models)[0], err == nil
		},
	}
	return o
}

// warnOpen logs, loudly, that a server listening beyond loopback takes requests from
// anyone who can reach it.
func warnOpen(log *slog.Logger, hosts []string, token string) {
	if token != "" {
		return
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || strings.EqualFold(h, "localhost") {
			continue
		}
		log.Warn("!!! THIS SERVER IS OPEN TO THE NETWORK WITHOUT AN ACCESS TOKEN !!! anyone who can reach " + h +
			" can queue prompts, read outputs and write files; start it with --auth-token (or --auth-token-file), or listen on 127.0.0.1")
		return
	}
}
