package server

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"
)

// clientAddress returns how a request's client address is read, for the failure budgets,
// the signed reads' shares and the logs. Without trusted proxies it is the TCP peer. With
// them, a request whose peer is one of them is the client's that X-Forwarded-For names:
// echo's extractor walks the header from the right, past the trusted proxies, to the first
// address that is not one; what lies left of it is the client's own claim and is never read.
// A request from any other peer is its peer's, whatever its headers say. Only
// X-Forwarded-For is read (not Forwarded, nor X-Real-IP): it is what ingress-nginx and
// Envoy write, and reading a second header a proxy does not write would let the client
// write it.
func clientAddress(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	// Only the ranges given: echo trusts loopback, link-local and private addresses unless
	// told otherwise.
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// ParseTrustedProxies reads --trusted-proxies: address ranges (CIDR) or single addresses.
func ParseTrustedProxies(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q: want an address range (10.0.0.0/8, fd00::/8) or an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%q: want an address range without a zone", v)
		}
		a := p.Addr().Unmap()
		if a.Is4() && p.Addr().Is4In6() {
			p = netip.PrefixFrom(a, max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
