// Package dnscheck checks the DNS records a domain publishes for mail
// sent and received through the relay (the checklist of the README's
// "Delivering to the Internet"): MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT
// and DANE, each looked up through the relay's own resolver and policy
// code, so that what it reports is what the relay itself would see.
package dnscheck

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/dane"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/resolve"
	"github.com/relay-mta/relay/relay/tlsrpt"
)

// Status is the verdict on one record.
type Status string

// The verdicts. Missing and Fail make the check fail; None is an
// optional record not published.
const (
	OK      Status = "ok"
	Missing Status = "missing"
	Fail    Status = "FAIL"
	None    Status = "none"
)

// Item is the verdict on one record of the checklist.
type Item struct {
	Record string // "MX", "SPF", "DKIM s1", "DMARC", "MTA-STS", "TLS-RPT", "DANE mx.example.org"
	Status Status
	Text   string // what was found, or what to publish
}

// DKIMKey is a key the relay signs with for the domain.
type DKIMKey struct {
	Selector string
	Public   crypto.PublicKey
}

// Options configure Check.
type Options struct {
	Resolver *resolve.Resolver
	// STS fetches MTA-STS policies (its Cache is not used).
	STS *mtasts.Source
	// DKIM are the relay's signing keys for the domain ([[dkim.sign]]).
	DKIM []DKIMKey
}

// Check looks up domain's records.
func Check(ctx context.Context, domain string, o Options) []Item {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	r := o.Resolver
	var out []Item
	add := func(rec string, st Status, format string, args ...any) {
		out = append(out, Item{Record: rec, Status: st, Text: fmt.Sprintf(format, args...)})
	}

	// MX (RFC 5321 §5.1, RFC 7505).
	mxs, mxSecure, err := r.LookupMXSecure(ctx, domain)
	var hosts []string
	switch {
	case err != nil && !notFound(err):
		add("MX", Fail, "lookup failed: %v", err)
	case err != nil:
		add("MX", Missing, "no MX record; publish e.g. %q (mail then goes to %s's own address, if any)", domain+". MX 10 mail."+domain+".", domain)
	default:
		slices.SortFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
		var parts []string
		for _, mx := range mxs {
			h := strings.TrimSuffix(strings.ToLower(mx.Host), ".")
			if h == "" {
				parts = append(parts, fmt.Sprintf("%d . (null MX: the domain receives no mail)", mx.Pref))
				continue
			}
			ips, err := r.LookupHost(ctx, h)
			if err != nil {
				add("MX", Fail, "MX host %s has no address: %v", h, err)
			}
			hosts = append(hosts, h)
			parts = append(parts, fmt.Sprintf("%d %s (%s)", mx.Pref, h, strings.Join(ips, ", ")))
		}
		sec := "not DNSSEC-validated"
		if mxSecure {
			sec = "DNSSEC-validated"
		}
		add("MX", OK, "%s; %s", strings.Join(parts, ", "), sec)
	}

	// SPF (RFC 7208 §4.5): exactly one v=spf1 record.
	txt, err := r.LookupTXT(ctx, domain)
	spf := withPrefix(txt, "v=spf1")
	switch {
	case err != nil && !notFound(err):
		add("SPF", Fail, "lookup failed: %v", err)
	case len(spf) == 0:
		add("SPF", Missing, "publish %q (the relay's address as your MX, or ip4:/ip6: of the relay)", domain+". TXT \"v=spf1 mx -all\"")
	case len(spf) > 1:
		add("SPF", Fail, "%d v=spf1 records; RFC 7208 allows one: %q", len(spf), spf)
	default:
		add("SPF", OK, "%q", spf[0])
	}

	// DKIM (RFC 6376 §3.6.2): the relay's keys for the domain.
	if len(o.DKIM) == 0 {
		add("DKIM", Missing, "the relay signs nothing for %s: relay dkim keygen --domain %s --selector s1 --out keys/%s.s1.pem, a [[dkim.sign]] entry, and the TXT record it prints", domain, domain, domain)
	}
	for _, k := range o.DKIM {
		name := dkim.RecordName(k.Selector, domain)
		rec := "DKIM " + k.Selector
		want, _ := dkim.TXTValue(k.Public)
		txt, err := r.LookupTXT(ctx, name)
		recs := withPrefix(txt, "v=DKIM1")
		switch {
		case err != nil && !notFound(err):
			add(rec, Fail, "%s: lookup failed: %v", name, err)
		case len(recs) == 0:
			add(rec, Missing, "publish %s TXT %q", name, want)
		case !slices.ContainsFunc(recs, func(v string) bool { return dkim.MatchesRecord(v, k.Public) }):
			add(rec, Fail, "%s does not publish the relay's key; publish %q", name, want)
		default:
			add(rec, OK, "%s publishes the relay's key", name)
		}
	}

	// DMARC (RFC 7489 §6.1).
	txt, err = r.LookupTXT(ctx, "_dmarc."+domain)
	dmarc := withPrefix(txt, "v=DMARC1")
	switch {
	case err != nil && !notFound(err):
		add("DMARC", Fail, "lookup failed: %v", err)
	case len(dmarc) != 1:
		add("DMARC", Missing, "publish %q", "_dmarc."+domain+". TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc@"+domain+"\"")
	default:
		add("DMARC", OK, "%q", dmarc[0])
	}

	// MTA-STS (RFC 8461): the record, the policy, the MX hosts in it.
	txt, err = r.LookupTXT(ctx, "_mta-sts."+domain)
	switch {
	case err != nil && !notFound(err):
		add("MTA-STS", Fail, "lookup failed: %v", err)
	case err != nil:
		add("MTA-STS", None, "optional: _mta-sts.%s TXT \"v=STSv1; id=1\" and a policy at https://mta-sts.%s/.well-known/mta-sts.txt", domain, domain)
	default:
		id, err := mtasts.ParseTXT(txt)
		if err != nil {
			add("MTA-STS", Fail, "_mta-sts.%s: %v", domain, err)
			break
		}
		if o.STS == nil {
			add("MTA-STS", OK, "id=%s (policy not fetched)", id)
			break
		}
		p, err := o.STS.Fetch(ctx, domain)
		if err != nil {
			add("MTA-STS", Fail, "id=%s, but the policy cannot be fetched: %v", id, err)
			break
		}
		var unlisted []string
		for _, h := range hosts {
			if !p.Matches(h) {
				unlisted = append(unlisted, h)
			}
		}
		if len(unlisted) > 0 && p.Mode != mtasts.None {
			add("MTA-STS", Fail, "mode %s, but MX hosts %s are not in its mx lines %v: senders that enforce will not deliver to them", p.Mode, strings.Join(unlisted, ", "), p.MX)
			break
		}
		add("MTA-STS", OK, "id=%s, mode %s, mx %s, max_age %v", id, p.Mode, strings.Join(p.MX, " "), p.MaxAge)
	}

	// TLS-RPT (RFC 8460).
	txt, err = r.LookupTXT(ctx, "_smtp._tls."+domain)
	switch {
	case err != nil && !notFound(err):
		add("TLS-RPT", Fail, "lookup failed: %v", err)
	case err != nil:
		add("TLS-RPT", None, "optional: _smtp._tls.%s TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@%s\"", domain, domain)
	default:
		if ruas, err := tlsrpt.ParseRUA(txt); err != nil {
			add("TLS-RPT", Fail, "_smtp._tls.%s: %v", domain, err)
		} else {
			add("TLS-RPT", OK, "reports go to %s", strings.Join(ruas, ", "))
		}
	}

	// DANE (RFC 7672): TLSA of each MX host, used only when validated.
	for _, h := range hosts {
		name := "_25._tcp." + h
		rrs, secure, err := r.LookupTLSA(ctx, name)
		rec := "DANE " + h
		switch {
		case err != nil && !notFound(err):
			add(rec, Fail, "%s: lookup failed (senders using DANE defer mail to this host): %v", name, err)
		case err != nil:
			add(rec, None, "optional: no TLSA record at %s", name)
		case !secure || !mxSecure:
			add(rec, Fail, "TLSA records at %s, but the MX or TLSA answer is not DNSSEC-validated: DANE does not apply", name)
		default:
			usable := dane.Usable(rrs)
			if len(usable) == 0 {
				add(rec, Fail, "no usable TLSA record at %s (use 3 1 1 or 2 1 1)", name)
				break
			}
			var s []string
			for _, u := range usable {
				s = append(s, u.String())
			}
			add(rec, OK, "%s", strings.Join(s, "; "))
		}
	}
	return out
}

// Failed reports whether any required record is missing or wrong.
func Failed(items []Item) bool {
	return slices.ContainsFunc(items, func(i Item) bool { return i.Status == Fail || i.Status == Missing })
}

func withPrefix(txt []string, prefix string) []string {
	var out []string
	for _, t := range txt {
		if t == prefix || strings.HasPrefix(strings.ToLower(t), strings.ToLower(prefix)+" ") || strings.HasPrefix(strings.ToLower(t), strings.ToLower(prefix)+";") {
			out = append(out, t)
		}
	}
	return out
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
