package envelope

import "testing"

func TestDecodeXtext(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: ""},
		{in: "abc", want: "abc"},
		{in: "+2B", want: "+"},
		{in: "+3D", want: "="},
		{in: "a+20b", want: "a b"},
		{in: "+41+42", want: "AB"},
		{in: "+00", want: "\x00"},
		{in: "+FF", want: "\xff"},
		{in: "!~", want: "!~"},
		{in: "<>", want: "<>"},
		{in: "+2b", bad: true},
		{in: "+", bad: true},
		{in: "a+", bad: true},
		{in: "a+2", bad: true},
		{in: "+G0", bad: true},
		{in: "+ 20", bad: true},
		{in: "=", bad: true},
		{in: "a=b", bad: true},
		{in: "a b", bad: true},
		{in: "a\rb", bad: true},
		{in: "\x00", bad: true},
		{in: "\x7f", bad: true},
		{in: "é", bad: true},
	}
	for _, tc := range tests {
		got, err := DecodeXtext(tc.in)
		if tc.bad {
			checkErr(t, tc.in, err, ErrParamSyntax)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestEncodeXtext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{"a+b", "a+2Bb"},
		{"a=b", "a+3Db"},
		{"a b", "a+20b"},
		{"\r\n", "+0D+0A"},
		{"\x00\x7f", "+00+7F"},
		{"é", "+C3+A9"},
		{"<>", "<>"},
		{"!~", "!~"},
	}
	for _, tc := range tests {
		got := EncodeXtext(tc.in)
		if got != tc.want {
			t.Errorf("EncodeXtext(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := DecodeXtext(got)
		if err != nil || back != tc.in {
			t.Errorf("DecodeXtext(EncodeXtext(%q)) = %q, %v", tc.in, back, err)
		}
	}
	// Every byte value survives a round trip.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	if back, err := DecodeXtext(EncodeXtext(string(all))); err != nil || back != string(all) {
		t.Fatalf("all bytes: %q, %v", back, err)
	}
}

func TestUTF8AddrRoundTrip(t *testing.T) {
	for _, s := range []string{"a@b", "jöran@例子.广告", `a b+c=d\e@f`, "\U0001F600", "\u00a0", "ÿ", "Ā"} {
		enc := encodeUTF8Addr(s)
		if hasNonASCII(enc) {
			t.Errorf("encodeUTF8Addr(%q) = %q is not 7-bit", s, enc)
		}
		dec, err := decodeUTF8Addr(enc)
		if err != nil || dec != s {
			t.Errorf("decodeUTF8Addr(%q) = %q, %v; want %q", enc, dec, err, s)
		}
	}
}
