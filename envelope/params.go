package envelope

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Param keywords are case-insensitive; values are case-insensitive for
// BODY, RET, NOTIFY. Each parameter at most once (ErrParamDup).
// Parameters are separated by one or more spaces.

// Body is the BODY= parameter of MAIL FROM: the kind of content that
// follows, which decides whether the next hop must offer 8BITMIME or
// BINARYMIME.
type Body string

// BODY values; the parser stores them in these canonical (upper-case) forms.
const (
	Body7Bit       Body = "7BIT"       // US-ASCII lines only (RFC 6152)
	Body8BitMIME   Body = "8BITMIME"   // 8-bit MIME text in lines (RFC 6152)
	BodyBinaryMIME Body = "BINARYMIME" // binary MIME, sent with BDAT only (RFC 3030)
)

// Ret is the RET= parameter of MAIL FROM (RFC 3461): how much of the
// message a DSN returns.
type Ret string

// RET values; the parser stores them in these canonical (upper-case) forms.
const (
	RetFull Ret = "FULL" // return the whole message
	RetHdrs Ret = "HDRS" // return the header only
)

// maxEnvIDLen is the RFC 3461 §4.4 limit on ENVID, counted in its xtext
// (wire) form.
const maxEnvIDLen = 100

// maxSizeDigits is the RFC 1870 limit on the SIZE value: 1*20DIGIT.
const maxSizeDigits = 20

// MailParams are the ESMTP parameters of MAIL FROM.
type MailParams struct {
	Size     int64  // SIZE=n (RFC 1870); 0 when absent. n must be 1..20 digits decimal, fits int64.
	Body     Body   // BODY= (RFC 6152, RFC 3030); "" when absent
	SMTPUTF8 bool   // SMTPUTF8 (RFC 6531), takes no value
	Auth     string // AUTH=<mailbox> (RFC 4954), xtext-decoded; "<>" kept as "<>"; "" when absent
	Ret      Ret    // RET=FULL|HDRS (RFC 3461); "" when absent
	EnvID    string // ENVID= (RFC 3461), xtext-decoded; "" when absent. Max 100 chars encoded.

	// Priority is MT-PRIORITY= (RFC 6710), -9..9; 0 when absent, which is
	// also the RFC's default, so "MT-PRIORITY=0" formats as nothing.
	Priority int8
	// ByMode is the by-mode of BY= (RFC 2852): ByReturn or ByNotify; ""
	// when BY is absent. ByTime is the by-time in seconds (negative is
	// valid for N only, as the RFC allows), ByTrace the "T" flag.
	ByMode  ByMode
	ByTime  int64
	ByTrace bool
	// RequireTLS is REQUIRETLS (RFC 8689), which takes no value.
	RequireTLS bool
}

// ByMode is the by-mode of the BY= parameter of MAIL FROM (RFC 2852 §4).
type ByMode string

// BY modes; the parser stores them in these canonical (upper-case) forms.
const (
	ByReturn ByMode = "R" // not delivered by the deadline: fail and return the message
	ByNotify ByMode = "N" // not delivered by the deadline: send a delay DSN, keep trying
)

// maxByDigits is the RFC 2852 §4 limit on by-time: ["-" / "+"] 1*9digit.
const maxByDigits = 9

// Bits recording which keywords a command has used, to refuse repeats.
const (
	seenSize = 1 << iota
	seenBody
	seenSMTPUTF8
	seenAuth
	seenRet
	seenEnvID
	seenNotify
	seenORcpt
	seenPriority
	seenBy
	seenRequireTLS
)

// ParseMailParams parses the parameter text of MAIL FROM ("" is valid: no
// parameters). Unknown keywords give ErrParamUnknown; bad values give
// ErrParamSyntax; a repeated keyword gives ErrParamDup.
//
// A malformed keyword (RFC 5321 esmtp-keyword) and a missing or empty value
// are ErrParamSyntax. Decoded AUTH values may not hold control characters
// and must be valid UTF-8; decoded ENVID values must be printable US-ASCII
// (RFC 3461 §4.4), since both end up in DSNs and logs.
func ParseMailParams(s string) (MailParams, error) {
	var p MailParams
	var seen uint
	for s != "" {
		var field string
		if field, s = nextField(s); field == "" {
			break
		}
		kw, val, hasVal, err := splitParam(field)
		if err != nil {
			return MailParams{}, err
		}
		var bit uint
		switch {
		case equalFoldASCII(kw, "SIZE"):
			bit = seenSize
		case equalFoldASCII(kw, "BODY"):
			bit = seenBody
		case equalFoldASCII(kw, "SMTPUTF8"):
			bit = seenSMTPUTF8
		case equalFoldASCII(kw, "AUTH"):
			bit = seenAuth
		case equalFoldASCII(kw, "RET"):
			bit = seenRet
		case equalFoldASCII(kw, "ENVID"):
			bit = seenEnvID
		case equalFoldASCII(kw, "MT-PRIORITY"):
			bit = seenPriority
		case equalFoldASCII(kw, "BY"):
			bit = seenBy
		case equalFoldASCII(kw, "REQUIRETLS"):
			bit = seenRequireTLS
		default:
			return MailParams{}, errorf(ErrParamUnknown, "MAIL parameter %s is not supported", quote(kw))
		}
		if seen&bit != 0 {
			return MailParams{}, errorf(ErrParamDup, "MAIL parameter %s given twice", quote(kw))
		}
		seen |= bit
		if bit == seenSMTPUTF8 || bit == seenRequireTLS {
			if hasVal {
				return MailParams{}, errorf(ErrParamSyntax, "%s takes no value, got %s", quote(kw), quote(field))
			}
			if bit == seenSMTPUTF8 {
				p.SMTPUTF8 = true
			} else {
				p.RequireTLS = true
			}
			continue
		}
		if val == "" {
			return MailParams{}, errorf(ErrParamSyntax, "MAIL parameter %s needs a value", quote(kw))
		}
		switch bit {
		case seenSize:
			p.Size, err = parseSize(val)
		case seenBody:
			switch {
			case equalFoldASCII(val, string(Body7Bit)):
				p.Body = Body7Bit
			case equalFoldASCII(val, string(Body8BitMIME)):
				p.Body = Body8BitMIME
			case equalFoldASCII(val, string(BodyBinaryMIME)):
				p.Body = BodyBinaryMIME
			default:
				err = errorf(ErrParamSyntax, "BODY=%s is not 7BIT, 8BITMIME or BINARYMIME", quote(val))
			}
		case seenAuth:
			p.Auth, err = DecodeXtext(val)
			if err == nil && (hasControl(p.Auth) || !utf8.ValidString(p.Auth)) {
				err = errorf(ErrParamSyntax, "AUTH=%s decodes to control characters or invalid UTF-8", quote(val))
			}
		case seenRet:
			switch {
			case equalFoldASCII(val, string(RetFull)):
				p.Ret = RetFull
			case equalFoldASCII(val, string(RetHdrs)):
				p.Ret = RetHdrs
			default:
				err = errorf(ErrParamSyntax, "RET=%s is not FULL or HDRS", quote(val))
			}
		case seenEnvID:
			if len(val) > maxEnvIDLen {
				return MailParams{}, errorf(ErrParamSyntax, "ENVID of %d characters exceeds the limit of %d", len(val), maxEnvIDLen)
			}
			p.EnvID, err = DecodeXtext(val)
			if err == nil && !isPrintableASCII(p.EnvID) {
				err = errorf(ErrParamSyntax, "ENVID=%s decodes to characters other than printable US-ASCII", quote(val))
			}
		case seenPriority:
			p.Priority, err = parsePriority(val)
		case seenBy:
			p.ByTime, p.ByMode, p.ByTrace, err = parseBy(val)
		}
		if err != nil {
			return MailParams{}, err
		}
	}
	return p, nil
}

// parseSize parses an RFC 1870 size-value.
func parseSize(v string) (int64, error) {
	if len(v) > maxSizeDigits {
		return 0, errorf(ErrParamSyntax, "SIZE=%s has more than %d digits", quote(v), maxSizeDigits)
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, errorf(ErrParamSyntax, "SIZE=%s is not a decimal number", quote(v))
		}
		d := int64(v[i] - '0')
		if n > (1<<63-1-d)/10 {
			return 0, errorf(ErrParamSyntax, "SIZE=%s is too large", quote(v))
		}
		n = n*10 + d
	}
	return n, nil
}

// parsePriority parses an RFC 6710 priority-value: ["-" / "+"] DIGIT.
func parsePriority(v string) (int8, error) {
	digits, neg := v, false
	if len(v) == 2 && (v[0] == '-' || v[0] == '+') {
		digits, neg = v[1:], v[0] == '-'
	}
	if len(digits) != 1 || !isDigit(digits[0]) {
		return 0, errorf(ErrParamSyntax, "MT-PRIORITY=%s is not a number from -9 to 9", quote(v))
	}
	n := int8(digits[0] - '0')
	if neg {
		n = -n
	}
	return n, nil
}

// parseBy parses an RFC 2852 by-value: by-time ";" by-mode [by-trace],
// by-time = ["-" / "+"] 1*9digit, by-mode = "N" / "R", by-trace = "T".
// Whether a by-time of zero or less is acceptable depends on the mode
// and on the receiving server, so that check is the caller's.
func parseBy(v string) (secs int64, mode ByMode, trace bool, err error) {
	num, flags, ok := strings.Cut(v, ";")
	if !ok {
		return 0, "", false, errorf(ErrParamSyntax, "BY=%s has no ';' before the mode", quote(v))
	}
	digits, neg := num, false
	if num != "" && (num[0] == '-' || num[0] == '+') {
		digits, neg = num[1:], num[0] == '-'
	}
	if digits == "" || len(digits) > maxByDigits {
		return 0, "", false, errorf(ErrParamSyntax, "BY=%s: the time must be 1 to %d digits", quote(v), maxByDigits)
	}
	for i := 0; i < len(digits); i++ {
		if !isDigit(digits[i]) {
			return 0, "", false, errorf(ErrParamSyntax, "BY=%s: the time is not a decimal number", quote(v))
		}
		secs = secs*10 + int64(digits[i]-'0')
	}
	if neg {
		secs = -secs
	}
	switch {
	case len(flags) == 0 || len(flags) > 2:
		err = errorf(ErrParamSyntax, "BY=%s: the mode must be N or R, optionally followed by T", quote(v))
	case flags[0] == 'N' || flags[0] == 'n':
		mode = ByNotify
	case flags[0] == 'R' || flags[0] == 'r':
		mode = ByReturn
	default:
		err = errorf(ErrParamSyntax, "BY=%s: the mode must be N or R", quote(v))
	}
	if err == nil && len(flags) == 2 {
		if flags[1] != 'T' && flags[1] != 't' {
			err = errorf(ErrParamSyntax, "BY=%s: only T may follow the mode", quote(v))
		}
		trace = true
	}
	if err != nil {
		return 0, "", false, err
	}
	return secs, mode, trace, nil
}

// WithBy returns p with the by-time replaced by secs, clamped to what
// the wire form can carry (9 digits), for passing the remaining time of
// a deadline on to the next hop.
func (p MailParams) WithBy(secs int64) MailParams {
	const limit = 999999999
	p.ByTime = max(-limit, min(limit, secs))
	return p
}

// String formats the parameters in wire form, each preceded by one space
// (" SIZE=1024 BODY=8BITMIME"), "" when none; xtext-encodes ENVID and AUTH.
// ParseMailParams(strings.TrimPrefix(p.String(), " ")) == p.
//
// The order is SIZE, BODY, SMTPUTF8, AUTH, RET, ENVID, MT-PRIORITY, BY,
// REQUIRETLS; a Priority outside -9..9 is clamped and a ByTime outside
// the 9 digits is clamped. A value set by hand
// outside its type's constants is written with any byte outside 33..126
// replaced by '?', so the result is always one command line.
func (p MailParams) String() string {
	var b strings.Builder
	if p.Size > 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(p.Size, 10))
	}
	if p.Body != "" {
		b.WriteString(" BODY=")
		writeToken(&b, string(p.Body))
	}
	if p.SMTPUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if p.Auth != "" {
		b.WriteString(" AUTH=")
		b.WriteString(EncodeXtext(p.Auth))
	}
	if p.Ret != "" {
		b.WriteString(" RET=")
		writeToken(&b, string(p.Ret))
	}
	if p.EnvID != "" {
		b.WriteString(" ENVID=")
		b.WriteString(EncodeXtext(p.EnvID))
	}
	if p.Priority != 0 {
		b.WriteString(" MT-PRIORITY=")
		b.WriteString(strconv.Itoa(int(max(-9, min(9, p.Priority)))))
	}
	if p.ByMode != "" {
		b.WriteString(" BY=")
		b.WriteString(strconv.FormatInt(p.WithBy(p.ByTime).ByTime, 10))
		b.WriteByte(';')
		writeToken(&b, string(p.ByMode))
		if p.ByTrace {
			b.WriteByte('T')
		}
	}
	if p.RequireTLS {
		b.WriteString(" REQUIRETLS")
	}
	return b.String()
}

// Notify is the NOTIFY= parameter of RCPT (RFC 3461) as a bit set; 0 means absent.
type Notify uint8

// NOTIFY values.
const (
	NotifyNever   Notify = 1 << iota // NEVER: must appear alone
	NotifySuccess                    // SUCCESS: report delivery
	NotifyFailure                    // FAILURE: report failure (the default when NOTIFY is absent)
	NotifyDelay                      // DELAY: report a delay
)

// RcptParams are the ESMTP parameters of RCPT TO.
type RcptParams struct {
	Notify    Notify // 0 when absent
	ORcptType string // address type of ORCPT ("rfc822", "utf-8"), as given; "" when absent
	ORcpt     string // ORCPT address, xtext-decoded (utf-8 type: also decode \x{HEX} per RFC 6533)
}

// ParseRcptParams parses the parameter text of RCPT TO; errors as for ParseMailParams.
// NOTIFY=NEVER combined with anything else is ErrParamSyntax.
//
// A NOTIFY list naming a value twice is ErrParamSyntax. ORCPT is
// addr-type ";" address with addr-type an atom. An address of type "utf-8"
// (any case) is decoded per RFC 6533 (raw UTF-8, \x{HEX}, and "+XX" are all
// accepted) and must be valid UTF-8 without control characters; any other
// type is xtext and must decode to printable US-ASCII (RFC 3461 §4.2).
func ParseRcptParams(s string) (RcptParams, error) {
	var p RcptParams
	var seen uint
	for s != "" {
		var field string
		if field, s = nextField(s); field == "" {
			break
		}
		kw, val, _, err := splitParam(field)
		if err != nil {
			return RcptParams{}, err
		}
		var bit uint
		switch {
		case equalFoldASCII(kw, "NOTIFY"):
			bit = seenNotify
		case equalFoldASCII(kw, "ORCPT"):
			bit = seenORcpt
		default:
			return RcptParams{}, errorf(ErrParamUnknown, "RCPT parameter %s is not supported", quote(kw))
		}
		if seen&bit != 0 {
			return RcptParams{}, errorf(ErrParamDup, "RCPT parameter %s given twice", quote(kw))
		}
		seen |= bit
		if val == "" {
			return RcptParams{}, errorf(ErrParamSyntax, "RCPT parameter %s needs a value", quote(kw))
		}
		if bit == seenNotify {
			if p.Notify, err = parseNotify(val); err != nil {
				return RcptParams{}, err
			}
			continue
		}
		if p.ORcptType, p.ORcpt, err = parseORcpt(val); err != nil {
			return RcptParams{}, err
		}
	}
	return p, nil
}

// parseNotify parses "NEVER" or a comma list of SUCCESS, FAILURE, DELAY.
func parseNotify(v string) (Notify, error) {
	var n Notify
	for rest, more := v, true; more; {
		var item string
		item, rest, more = strings.Cut(rest, ",")
		var bit Notify
		switch {
		case equalFoldASCII(item, "NEVER"):
			bit = NotifyNever
		case equalFoldASCII(item, "SUCCESS"):
			bit = NotifySuccess
		case equalFoldASCII(item, "FAILURE"):
			bit = NotifyFailure
		case equalFoldASCII(item, "DELAY"):
			bit = NotifyDelay
		case item == "":
			return 0, errorf(ErrParamSyntax, "NOTIFY=%s has an empty item", quote(v))
		default:
			return 0, errorf(ErrParamSyntax, "NOTIFY=%s: %s is not NEVER, SUCCESS, FAILURE or DELAY", quote(v), quote(item))
		}
		if n&bit != 0 {
			return 0, errorf(ErrParamSyntax, "NOTIFY=%s names %s twice", quote(v), quote(item))
		}
		n |= bit
	}
	if n&NotifyNever != 0 && n != NotifyNever {
		return 0, errorf(ErrParamSyntax, "NOTIFY=%s: NEVER must appear alone", quote(v))
	}
	return n, nil
}

// parseORcpt parses original-recipient-address = addr-type ";" xtext.
func parseORcpt(v string) (typ, addr string, err error) {
	typ, enc, ok := strings.Cut(v, ";")
	if !ok {
		return "", "", errorf(ErrParamSyntax, "ORCPT=%s has no ';' after the address type", quote(v))
	}
	if typ == "" || !isAtom(typ) {
		return "", "", errorf(ErrParamSyntax, "ORCPT=%s has an invalid address type", quote(v))
	}
	if enc == "" {
		return "", "", errorf(ErrParamSyntax, "ORCPT=%s has an empty address", quote(v))
	}
	if equalFoldASCII(typ, "utf-8") {
		addr, err = decodeUTF8Addr(enc)
		return typ, addr, err
	}
	if addr, err = DecodeXtext(enc); err != nil {
		return "", "", err
	}
	if !isPrintableASCII(addr) {
		return "", "", errorf(ErrParamSyntax, "ORCPT=%s decodes to characters other than printable US-ASCII", quote(v))
	}
	return typ, addr, nil
}

// String formats in wire form like MailParams.String (NOTIFY values in the
// order SUCCESS,FAILURE,DELAY; ORCPT=type;xtext).
//
// An ORCPT of type "utf-8" is written as RFC 6533 utf-8-addr-xtext (7-bit,
// \x{HEX}), which every next hop accepts whether or not it has SMTPUTF8.
func (p RcptParams) String() string {
	var b strings.Builder
	if p.Notify != 0 {
		b.WriteString(" NOTIFY=")
		sep := ""
		for _, v := range [...]struct {
			bit  Notify
			name string
		}{{NotifyNever, "NEVER"}, {NotifySuccess, "SUCCESS"}, {NotifyFailure, "FAILURE"}, {NotifyDelay, "DELAY"}} {
			if p.Notify&v.bit != 0 {
				b.WriteString(sep)
				b.WriteString(v.name)
				sep = ","
			}
		}
	}
	if p.ORcptType != "" || p.ORcpt != "" {
		b.WriteString(" ORCPT=")
		writeToken(&b, p.ORcptType)
		b.WriteByte(';')
		if equalFoldASCII(p.ORcptType, "utf-8") {
			b.WriteString(encodeUTF8Addr(p.ORcpt))
		} else {
			b.WriteString(EncodeXtext(p.ORcpt))
		}
	}
	return b.String()
}

// nextField returns the first space-separated field of s and the rest.
func nextField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " ")
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// splitParam splits "keyword[=value]" and checks the RFC 5321 syntax:
// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") and
// esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 §3.3) which
// only an ORCPT of type utf-8 can use.
func splitParam(field string) (kw, val string, hasVal bool, err error) {
	kw, val, hasVal = strings.Cut(field, "=")
	if kw == "" || !isLetDig(kw[0]) {
		return "", "", false, errorf(ErrParamSyntax, "malformed parameter %s", quote(field))
	}
	for i := 1; i < len(kw); i++ {
		if !isLetDig(kw[i]) && kw[i] != '-' {
			return "", "", false, errorf(ErrParamSyntax, "malformed parameter keyword %s", quote(kw))
		}
	}
	for i := 0; i < len(val); i++ {
		if c := val[i]; c < 33 || c == '=' || c == 0x7f {
			return "", "", false, errorf(ErrParamSyntax, "invalid character %s in value of parameter %s", quoteByte(c), quote(kw))
		}
	}
	return kw, val, hasVal, nil
}

// isAtom reports whether s is an RFC 5322 atom (ASCII atext only).
func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// isPrintableASCII reports whether s holds only %d32-126.
func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 32 || s[i] > 126 {
			return false
		}
	}
	return true
}

// writeToken writes s with every byte outside 33..126 replaced by '?'.
func writeToken(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 {
			b.WriteByte('?')
		} else {
			b.WriteByte(c)
		}
	}
}
