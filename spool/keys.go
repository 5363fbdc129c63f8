package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Key prefixes. See doc.go for the full layout.
const (
	prefixMessage  = "m/"
	prefixBody     = "b/"
	prefixRcpt     = "r/"
	prefixSchedule = "t/"
	prefixClass    = "u/" // schedule indexes of the priority classes other than 0
	prefixEvent    = "e/"
	prefixMailbox  = "x/" // reserved for local mailboxes (later task)
	prefixState    = "s/"

	keyVersion = prefixState + "version"
	keyIDHigh  = prefixState + "idhigh"

	// layoutVersion is stored under s/version. Bump it when the layout or
	// a record format changes incompatibly.
	layoutVersion = 1
)

// IDLen is the length of a message ID: 13 characters of Crockford base32.
const IDLen = 13

// idAlphabet is Crockford's base32 alphabet. Its characters are in
// ascending ASCII order, so fixed-width IDs sort like the numbers they encode.
const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var errBadID = errors.New("malformed message ID")

// formatID encodes v as a 13-character, fixed-width, sortable string.
func formatID(v uint64) string {
	var b [IDLen]byte
	for i := IDLen - 1; i >= 0; i-- {
		b[i] = idAlphabet[v&31]
		v >>= 5
	}
	return string(b[:])
}

// parseID decodes an ID made by formatID. Lower case is accepted (and
// i/l/o are read as 1/1/0, as Crockford prescribes), so admins can type IDs.
func parseID(s string) (uint64, error) {
	if len(s) != IDLen {
		return 0, errBadID
	}
	var v uint64
	for i := 0; i < IDLen; i++ {
		d := idDigit(s[i])
		if d < 0 || (i == 0 && d > 15) { // 13*5 = 65 bits: first digit holds 4
			return 0, errBadID
		}
		v = v<<5 | uint64(d)
	}
	return v, nil
}

func idDigit(c byte) int {
	if c >= 'a' && c <= 'z' {
		c -= 'a' - 'A'
	}
	switch c {
	case 'O':
		c = '0'
	case 'I', 'L':
		c = '1'
	}
	for i := 0; i < len(idAlphabet); i++ {
		if idAlphabet[i] == c {
			return i
		}
	}
	return -1
}

// canonicalID returns the canonical spelling of id, or an error if it is
// not a message ID at all.
func canonicalID(id string) (string, error) {
	v, err := parseID(id)
	if err != nil {
		return "", err
	}
	return formatID(v), nil
}

func msgKey(id string) []byte {
	return append([]byte(prefixMessage), id...)
}

func chunkKey(id string, n uint32) []byte {
	k := make([]byte, 0, len(prefixBody)+IDLen+1+4)
	k = append(k, prefixBody...)
	k = append(k, id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint32(k, n)
}

func rcptPrefix(id string) []byte {
	k := make([]byte, 0, len(prefixRcpt)+IDLen+1+4)
	k = append(k, prefixRcpt...)
	k = append(k, id...)
	return append(k, '/')
}

func rcptKey(id string, n uint32) []byte {
	return binary.BigEndian.AppendUint32(rcptPrefix(id), n)
}

// parseRcptKey returns n from r/<id>/<n>.
func parseRcptKey(k []byte, id string) (uint32, error) {
	p := rcptPrefix(id)
	if len(k) != len(p)+4 || string(k[:len(p)]) != string(p) {
		return 0, fmt.Errorf("malformed recipient key %q", k)
	}
	return binary.BigEndian.Uint32(k[len(p):]), nil
}

const schedKeyLen = len(prefixSchedule) + 8 + 1 + IDLen + 1 + 4

// classKeyLen is the length of a u/ key: two bytes more than a t/ key.
const classKeyLen = schedKeyLen + 2

// classRank orders the priority classes other than 0 in u/: 9 ranks
// first (0) and -9 last (18), so that the classes above 0 are ranks 0-8
// and those below it ranks 10-18.
func classRank(prio int8) byte { return byte(9 - int(prio)) }

// rankPriority undoes classRank.
func rankPriority(rank byte) int8 { return int8(9 - int(rank)) }

// parseClassKey splits u/<rank>/<due>/<id>/<n>.
func parseClassKey(k []byte) (Due, error) {
	if len(k) != classKeyLen || string(k[:len(prefixClass)]) != prefixClass || k[len(prefixClass)] > 18 || k[len(prefixClass)] == 9 {
		return Due{}, fmt.Errorf("malformed schedule key %q", k)
	}
	d, err := parseSchedKey(append([]byte(prefixSchedule), k[len(prefixClass)+2:]...))
	if err != nil {
		return Due{}, fmt.Errorf("malformed schedule key %q", k)
	}
	d.Priority = rankPriority(k[len(prefixClass)])
	return d, nil
}

// dueNanos maps a time to the 8-byte schedule key component: Unix
// nanoseconds, clamped at 0 so that the big-endian encoding sorts by time.
func dueNanos(t time.Time) uint64 {
	n := t.UnixNano()
	if t.IsZero() || n < 0 {
		return 0
	}
	return uint64(n)
}

// schedKey is the schedule key of recipient n of message id, due at due,
// in the index of its message's priority class: t/ for priority 0,
// u/<rank>/ for the others (see classRank).
func schedKey(prio int8, due uint64, id string, n uint32) []byte {
	k := make([]byte, 0, classKeyLen)
	if prio == 0 {
		k = append(k, prefixSchedule...)
	} else {
		k = append(k, prefixClass...)
		k = append(k, classRank(prio), '/')
	}
	k = binary.BigEndian.AppendUint64(k, due)
	k = append(k, '/')
	k = append(k, id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint32(k, n)
}

// parseSchedKey splits t/<due>/<id>/<n>.
func parseSchedKey(k []byte) (Due, error) {
	if len(k) != schedKeyLen || string(k[:len(prefixSchedule)]) != prefixSchedule {
		return Due{}, fmt.Errorf("malformed schedule key %q", k)
	}
	p := len(prefixSchedule)
	due := binary.BigEndian.Uint64(k[p:])
	p += 9
	id := string(k[p : p+IDLen])
	p += IDLen + 1
	n := binary.BigEndian.Uint32(k[p:])
	return Due{ID: id, Rcpt: int(n), At: time.Unix(0, int64(due))}, nil
}

func eventPrefix(id string) []byte {
	k := make([]byte, 0, len(prefixEvent)+IDLen+1+8)
	k = append(k, prefixEvent...)
	k = append(k, id...)
	return append(k, '/')
}

func eventKey(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(eventPrefix(id), seq)
}
