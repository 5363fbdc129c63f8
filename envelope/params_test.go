package envelope

import (
	"strings"
	"testing"
)

func TestParseMailParams(t *testing.T) {
	envid100 := strings.Repeat("e", 100)
	tests := []struct {
		name string
		in   string
		want MailParams
		str  string // expected String() without the leading space; "" means in
		err  error
	}{
		{name: "empty", in: "", want: MailParams{}},
		{name: "spaces only", in: "   ", want: MailParams{}, str: "-"},
		{name: "size", in: "SIZE=1024", want: MailParams{Size: 1024}},
		{name: "size lower", in: "size=1024", want: MailParams{Size: 1024}, str: "SIZE=1024"},
		{name: "size zero", in: "SIZE=0", want: MailParams{}, str: "-"},
		{name: "size leading zeros", in: "SIZE=007", want: MailParams{Size: 7}, str: "SIZE=7"},
		{name: "size max", in: "SIZE=9223372036854775807", want: MailParams{Size: 1<<63 - 1}},
		{name: "size 20 digits zero padded", in: "SIZE=00000000000000000001", want: MailParams{Size: 1}, str: "SIZE=1"},
		{name: "size overflow", in: "SIZE=9223372036854775808", err: ErrParamSyntax},
		{name: "size 21 digits", in: "SIZE=000000000000000000001", err: ErrParamSyntax},
		{name: "size negative", in: "SIZE=-1", err: ErrParamSyntax},
		{name: "size plus", in: "SIZE=+1", err: ErrParamSyntax},
		{name: "size hex", in: "SIZE=0x10", err: ErrParamSyntax},
		{name: "size empty", in: "SIZE=", err: ErrParamSyntax},
		{name: "size no value", in: "SIZE", err: ErrParamSyntax},
		{name: "size dup", in: "SIZE=1 size=2", err: ErrParamDup},
		{name: "size zero dup", in: "SIZE=0 SIZE=0", err: ErrParamDup},
		{name: "body 7bit", in: "BODY=7BIT", want: MailParams{Body: Body7Bit}},
		{name: "body 8bit lower", in: "body=8bitmime", want: MailParams{Body: Body8BitMIME}, str: "BODY=8BITMIME"},
		{name: "body binary", in: "BODY=BinaryMIME", want: MailParams{Body: BodyBinaryMIME}, str: "BODY=BINARYMIME"},
		{name: "body bad", in: "BODY=8BIT", err: ErrParamSyntax},
		{name: "body empty", in: "BODY=", err: ErrParamSyntax},
		{name: "body dup", in: "BODY=7BIT BODY=7BIT", err: ErrParamDup},
		{name: "smtputf8", in: "SMTPUTF8", want: MailParams{SMTPUTF8: true}},
		{name: "smtputf8 lower", in: "smtputf8", want: MailParams{SMTPUTF8: true}, str: "SMTPUTF8"},
		{name: "smtputf8 value", in: "SMTPUTF8=yes", err: ErrParamSyntax},
		{name: "smtputf8 empty value", in: "SMTPUTF8=", err: ErrParamSyntax},
		{name: "smtputf8 dup", in: "SMTPUTF8 SMTPUTF8", err: ErrParamDup},
		{name: "auth", in: "AUTH=joe@example.com", want: MailParams{Auth: "joe@example.com"}},
		{name: "auth null", in: "AUTH=<>", want: MailParams{Auth: "<>"}},
		{name: "auth xtext", in: "AUTH=joe+2Bx@b", want: MailParams{Auth: "joe+x@b"}},
		{name: "auth needless hex", in: "AUTH=+41b@c", want: MailParams{Auth: "Ab@c"}, str: "AUTH=Ab@c"},
		{name: "auth utf8 hex", in: "AUTH=j+C3+B6@b", want: MailParams{Auth: "jö@b"}},
		{name: "auth lower hex", in: "AUTH=a+2b@b", err: ErrParamSyntax},
		{name: "auth raw utf8", in: "AUTH=jö@b", err: ErrParamSyntax},
		{name: "auth CR", in: "AUTH=a+0Db", err: ErrParamSyntax},
		{name: "auth NUL", in: "AUTH=a+00b", err: ErrParamSyntax},
		{name: "auth bad utf8", in: "AUTH=a+FFb", err: ErrParamSyntax},
		{name: "auth empty", in: "AUTH=", err: ErrParamSyntax},
		{name: "auth dup", in: "AUTH=<> AUTH=<>", err: ErrParamDup},
		{name: "ret full", in: "RET=FULL", want: MailParams{Ret: RetFull}},
		{name: "ret hdrs lower", in: "ret=hdrs", want: MailParams{Ret: RetHdrs}, str: "RET=HDRS"},
		{name: "ret bad", in: "RET=BODY", err: ErrParamSyntax},
		{name: "ret dup", in: "RET=FULL RET=HDRS", err: ErrParamDup},
		{name: "envid", in: "ENVID=QQ314159", want: MailParams{EnvID: "QQ314159"}},
		{name: "envid xtext", in: "ENVID=a+20b+2Bc+3Dd", want: MailParams{EnvID: "a b+c=d"}},
		{name: "envid 100", in: "ENVID=" + envid100, want: MailParams{EnvID: envid100}},
		{name: "envid 101", in: "ENVID=" + envid100 + "e", err: ErrParamSyntax},
		{name: "envid CRLF", in: "ENVID=a+0D+0Ab", err: ErrParamSyntax},
		{name: "envid utf8", in: "ENVID=a+C3+B6", err: ErrParamSyntax},
		{name: "envid short hex", in: "ENVID=a+2", err: ErrParamSyntax},
		{name: "envid empty", in: "ENVID=", err: ErrParamSyntax},
		{name: "envid dup", in: "ENVID=a ENVID=b", err: ErrParamDup},
		{name: "all", in: "SIZE=1024 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=x+2By",
			want: MailParams{Size: 1024, Body: Body8BitMIME, SMTPUTF8: true, Auth: "<>", Ret: RetHdrs, EnvID: "x+y"}},
		{name: "all reordered", in: "  envid=x+2By   ret=HDRS AUTH=<> smtputf8 BODY=8BITMIME SIZE=1024  ",
			want: MailParams{Size: 1024, Body: Body8BitMIME, SMTPUTF8: true, Auth: "<>", Ret: RetHdrs, EnvID: "x+y"},
			str:  "SIZE=1024 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=x+2By"},
		{name: "unknown", in: "FOO=bar", err: ErrParamUnknown},
		{name: "unknown no value", in: "XFOO", err: ErrParamUnknown},
		{name: "rcpt param in mail", in: "NOTIFY=NEVER", err: ErrParamUnknown},
		{name: "unknown after valid", in: "SIZE=1 X-FOO=1", err: ErrParamUnknown},
		{name: "bad keyword", in: "-SIZE=1", err: ErrParamSyntax},
		{name: "empty keyword", in: "=1", err: ErrParamSyntax},
		{name: "keyword underscore", in: "SI_ZE=1", err: ErrParamSyntax},
		{name: "two equals", in: "SIZE=1=2", err: ErrParamSyntax},
		{name: "tab separator", in: "SIZE=1\tBODY=7BIT", err: ErrParamSyntax},
		{name: "CR in value", in: "ENVID=a\rb", err: ErrParamSyntax},
		{name: "LF after", in: "SIZE=1\n", err: ErrParamSyntax},
		{name: "NUL", in: "SIZE=1\x00", err: ErrParamSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseMailParams(tc.in)
			if tc.err != nil {
				checkErr(t, tc.in, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("%q: %v", tc.in, err)
			}
			if p != tc.want {
				t.Fatalf("%q: got %#v, want %#v", tc.in, p, tc.want)
			}
			wantStr := tc.str
			switch wantStr {
			case "":
				wantStr = " " + tc.in
			case "-":
				wantStr = ""
			default:
				wantStr = " " + wantStr
			}
			if tc.in == "" {
				wantStr = ""
			}
			s := p.String()
			if s != wantStr {
				t.Fatalf("%q: String() = %q, want %q", tc.in, s, wantStr)
			}
			q, err := ParseMailParams(strings.TrimPrefix(s, " "))
			if err != nil || q != p {
				t.Fatalf("%q: reparse of %q: %#v, %v", tc.in, s, q, err)
			}
		})
	}
}

func TestParseRcptParams(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want RcptParams
		str  string
		err  error
	}{
		{name: "empty", in: "", want: RcptParams{}},
		{name: "never", in: "NOTIFY=NEVER", want: RcptParams{Notify: NotifyNever}},
		{name: "success", in: "NOTIFY=SUCCESS", want: RcptParams{Notify: NotifySuccess}},
		{name: "failure delay", in: "NOTIFY=FAILURE,DELAY", want: RcptParams{Notify: NotifyFailure | NotifyDelay}},
		{name: "all reordered lower", in: "notify=delay,Success,failure", want: RcptParams{Notify: NotifySuccess | NotifyFailure | NotifyDelay}, str: "NOTIFY=SUCCESS,FAILURE,DELAY"},
		{name: "never lower", in: "NOTIFY=never", want: RcptParams{Notify: NotifyNever}, str: "NOTIFY=NEVER"},
		{name: "never success", in: "NOTIFY=NEVER,SUCCESS", err: ErrParamSyntax},
		{name: "success never", in: "NOTIFY=SUCCESS,NEVER", err: ErrParamSyntax},
		{name: "never twice", in: "NOTIFY=NEVER,NEVER", err: ErrParamSyntax},
		{name: "success twice", in: "NOTIFY=SUCCESS,success", err: ErrParamSyntax},
		{name: "notify unknown", in: "NOTIFY=ALWAYS", err: ErrParamSyntax},
		{name: "notify empty item", in: "NOTIFY=SUCCESS,,DELAY", err: ErrParamSyntax},
		{name: "notify trailing comma", in: "NOTIFY=SUCCESS,", err: ErrParamSyntax},
		{name: "notify empty", in: "NOTIFY=", err: ErrParamSyntax},
		{name: "notify no value", in: "NOTIFY", err: ErrParamSyntax},
		{name: "notify dup", in: "NOTIFY=NEVER NOTIFY=NEVER", err: ErrParamDup},
		{name: "orcpt", in: "ORCPT=rfc822;joe@example.com", want: RcptParams{ORcptType: "rfc822", ORcpt: "joe@example.com"}},
		{name: "orcpt type case kept", in: "ORCPT=RFC822;a@b", want: RcptParams{ORcptType: "RFC822", ORcpt: "a@b"}},
		{name: "orcpt xtext", in: "ORCPT=rfc822;a+2Bb+20c@d", want: RcptParams{ORcptType: "rfc822", ORcpt: "a+b c@d"}},
		{name: "orcpt semicolon in addr", in: "ORCPT=rfc822;a;b@c", want: RcptParams{ORcptType: "rfc822", ORcpt: "a;b@c"}},
		{name: "orcpt other type", in: "ORCPT=x400;c+3Dus", want: RcptParams{ORcptType: "x400", ORcpt: "c=us"}},
		{name: "orcpt utf8 type ascii", in: "ORCPT=utf-8;a@b", want: RcptParams{ORcptType: "utf-8", ORcpt: "a@b"}},
		{name: "orcpt utf8 escape", in: `ORCPT=utf-8;j\x{F6}ran@b`, want: RcptParams{ORcptType: "utf-8", ORcpt: "jöran@b"}},
		{name: "orcpt utf8 escape lower", in: `ORCPT=UTF-8;j\x{f6}ran@\x{4F8B}`, want: RcptParams{ORcptType: "UTF-8", ORcpt: "jöran@例"}, str: `ORCPT=UTF-8;j\x{F6}ran@\x{4F8B}`},
		{name: "orcpt utf8 raw", in: "ORCPT=utf-8;jöran@例", want: RcptParams{ORcptType: "utf-8", ORcpt: "jöran@例"}, str: `ORCPT=utf-8;j\x{F6}ran@\x{4F8B}`},
		{name: "orcpt utf8 specials", in: `ORCPT=utf-8;a\x{20}b\x{2B}c\x{3D}d\x{5C}e@f`, want: RcptParams{ORcptType: "utf-8", ORcpt: `a b+c=d\e@f`}},
		{name: "orcpt utf8 xtext", in: "ORCPT=utf-8;j+C3+B6@b", want: RcptParams{ORcptType: "utf-8", ORcpt: "jö@b"}, str: `ORCPT=utf-8;j\x{F6}@b`},
		{name: "orcpt utf8 astral", in: `ORCPT=utf-8;\x{1F600}@b`, want: RcptParams{ORcptType: "utf-8", ORcpt: "\U0001F600@b"}},
		{name: "orcpt utf8 max", in: `ORCPT=utf-8;\x{10FFFF}@b`, want: RcptParams{ORcptType: "utf-8", ORcpt: "\U0010FFFF@b"}},
		{name: "orcpt utf8 needless escape", in: `ORCPT=utf-8;\x{41}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 leading zero", in: `ORCPT=utf-8;\x{00F6}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 one digit", in: `ORCPT=utf-8;\x{A}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 surrogate", in: `ORCPT=utf-8;\x{D800}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 too big", in: `ORCPT=utf-8;\x{110000}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 unclosed", in: `ORCPT=utf-8;\x{F6@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 not hex", in: `ORCPT=utf-8;\x{G6}@b`, err: ErrParamSyntax},
		{name: "orcpt utf8 bare backslash", in: `ORCPT=utf-8;a\b`, err: ErrParamSyntax},
		{name: "orcpt utf8 CR escape", in: `ORCPT=utf-8;a\x{0D}b`, err: ErrParamSyntax},
		{name: "orcpt utf8 LF xtext", in: "ORCPT=utf-8;a+0Ab", err: ErrParamSyntax},
		{name: "orcpt utf8 NUL escape", in: `ORCPT=utf-8;a\x{00}b`, err: ErrParamSyntax},
		{name: "orcpt utf8 bad raw", in: "ORCPT=utf-8;a\xffb", err: ErrParamSyntax},
		{name: "orcpt utf8 bad xtext bytes", in: "ORCPT=utf-8;a+FFb", err: ErrParamSyntax},
		{name: "orcpt rfc822 raw utf8", in: "ORCPT=rfc822;jö@b", err: ErrParamSyntax},
		{name: "orcpt rfc822 CR", in: "ORCPT=rfc822;a+0Db", err: ErrParamSyntax},
		{name: "orcpt rfc822 utf8 bytes", in: "ORCPT=rfc822;j+C3+B6@b", err: ErrParamSyntax},
		{name: "orcpt rfc822 backslash x", in: `ORCPT=rfc822;a\x{F6}`, want: RcptParams{ORcptType: "rfc822", ORcpt: `a\x{F6}`}},
		{name: "orcpt raw equals", in: "ORCPT=x400;c=us", err: ErrParamSyntax},
		{name: "orcpt no semicolon", in: "ORCPT=rfc822", err: ErrParamSyntax},
		{name: "orcpt empty type", in: "ORCPT=;a@b", err: ErrParamSyntax},
		{name: "orcpt bad type", in: "ORCPT=rfc(822);a@b", err: ErrParamSyntax},
		{name: "orcpt empty addr", in: "ORCPT=rfc822;", err: ErrParamSyntax},
		{name: "orcpt lower hex", in: "ORCPT=rfc822;a+2bb", err: ErrParamSyntax},
		{name: "orcpt dup", in: "ORCPT=rfc822;a ORCPT=rfc822;b", err: ErrParamDup},
		{name: "both", in: "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b", want: RcptParams{Notify: NotifySuccess | NotifyFailure, ORcptType: "rfc822", ORcpt: "a@b"}},
		{name: "both reordered", in: "ORCPT=rfc822;a@b   NOTIFY=DELAY ", want: RcptParams{Notify: NotifyDelay, ORcptType: "rfc822", ORcpt: "a@b"}, str: "NOTIFY=DELAY ORCPT=rfc822;a@b"},
		{name: "unknown", in: "XRCPT=1", err: ErrParamUnknown},
		{name: "mail param in rcpt", in: "SIZE=1", err: ErrParamUnknown},
		{name: "bad keyword", in: "NOT IFY=NEVER", err: ErrParamUnknown},
		{name: "keyword symbol", in: "NOTIFY!=NEVER", err: ErrParamSyntax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseRcptParams(tc.in)
			if tc.err != nil {
				checkErr(t, tc.in, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("%q: %v", tc.in, err)
			}
			if p != tc.want {
				t.Fatalf("%q: got %#v, want %#v", tc.in, p, tc.want)
			}
			wantStr := tc.str
			if wantStr == "" {
				wantStr = tc.in
			}
			if wantStr != "" {
				wantStr = " " + wantStr
			}
			s := p.String()
			if s != wantStr {
				t.Fatalf("%q: String() = %q, want %q", tc.in, s, wantStr)
			}
			q, err := ParseRcptParams(strings.TrimPrefix(s, " "))
			if err != nil || q != p {
				t.Fatalf("%q: reparse of %q: %#v, %v", tc.in, s, q, err)
			}
		})
	}
}

// TestParamsStringSafe covers values no parser would produce: String must
// still give a single line.
func TestParamsStringSafe(t *testing.T) {
	m := MailParams{Size: -5, Body: "8BIT\r\nRSET", Ret: "X Y", Auth: "a\r\nb", EnvID: "x\x00"}
	r := RcptParams{Notify: NotifySuccess, ORcptType: "rfc822\r\n", ORcpt: "a\nb"}
	u := RcptParams{ORcptType: "utf-8", ORcpt: "a\r\n\xff"}
	for _, s := range []string{m.String(), r.String(), u.String()} {
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Errorf("unsafe String(): %q", s)
		}
	}
	if got := m.String(); strings.Contains(got, "SIZE") {
		t.Errorf("negative size written: %q", got)
	}
}
