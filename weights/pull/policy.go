package pull

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// DefaultHosts are the hosts a server downloads from unless configured otherwise:
// Hugging Face (its download hosts are subdomains: cdn-lfs.huggingface.co,
// cas-bridge.xethub.hf.co, ...) and Civitai.
var DefaultHosts = []string{"huggingface.co", "hf.co", "civitai.com"}

// ErrHostNotAllowed refuses a download from a host outside a Policy.
var ErrHostNotAllowed = errors.New("download host not allowed")

// Policy restricts downloads made on someone else's behalf (a server asked by a
// client): the URL asked for must be on an allow-list, and the connections a transfer
// makes, redirects included, reach only public addresses unless their host is on the
// list. Hosting sites redirect to storage hosts that change (Civitai's go to several
// cloud stores), so redirects are not held to the list, only to https and public
// addresses: the server can never be made to fetch from the machine itself or its
// private network.
type Policy struct {
	// Hosts are the allowed host names (or IP literals); an entry also allows its
	// subdomains. "*" allows every host (addresses stay public-only unless listed).
	Hosts []string
}

// listed reports whether host is one of the hosts or below one.
func (p *Policy) listed(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	for _, h := range p.Hosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h == "" || h == "*" {
			continue
		}
		if host == h || strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	return false
}

// Check refuses a URL whose host is not on the list.
func (p *Policy) Check(rawURL string) error {
	u, err := checkURL(rawURL)
	if err != nil {
		return err
	}
	if p.listed(u.Hostname()) {
		return nil
	}
	for _, h := range p.Hosts {
		if strings.TrimSpace(h) == "*" {
			return nil
		}
	}
	return fmt.Errorf("pull: %s: %w (allowed: %s)", u.Host, ErrHostNotAllowed, strings.Join(p.Hosts, ", "))
}

// client builds the HTTP client of a policy: its dialer refuses non-public addresses
// for hosts that are not listed.
func (p *Policy) client() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           p.dial,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{Transport: tr}
}

func (p *Policy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !p.listed(host) {
		d.Control = publicOnly
	}
	return d.DialContext(ctx, network, addr)
}

// publicOnly refuses a connection to a loopback, private, link-local, shared (CGNAT),
// multicast or unspecified address; it runs after name resolution, on the address
// actually dialled.
func publicOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("pull: dial %s: %w", address, err)
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || cgnat.Contains(ip) {
		return fmt.Errorf("pull: dial %s: %w: not a public address", address, ErrHostNotAllowed)
	}
	return nil
}

// cgnat is the shared address space of RFC 6598.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// checkRedirect is the redirect rule of every download: at most 10 hops, each to an
// https URL (or http to a loopback host).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("pull: more than 10 redirects")
	}
	if _, err := checkURL(req.URL.String()); err != nil {
		return fmt.Errorf("redirect to %s: %w", redactURL(req.URL), err)
	}
	return nil
}

// redactURL drops the query (signed storage URLs carry credentials there).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}
