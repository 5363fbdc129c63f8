package accept

import (
	"net"
	"net/netip"
)

// Loopback reports whether a connection's remote address is a loopback
// address (127.0.0.0/8, ::1, or 127.x mapped into IPv6). Such a
// connection never leaves the machine, so the servers may treat it as
// secure, as Dovecot does: a password sent on it in the clear is seen by
// nobody who could not read it anyway.
func Loopback(remote net.Addr) bool {
	var ip netip.Addr
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if remote == nil {
			return false
		}
		ap, err := netip.ParseAddrPort(remote.String())
		if err != nil {
			return false
		}
		ip = ap.Addr()
	}
	return ip.Unmap().IsLoopback()
}
