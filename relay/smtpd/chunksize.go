package smtpd

// chunkDigits returns the BDAT chunk size s when it is 1*DIGIT (RFC 3030
// §2), and "" (which strconv.ParseInt refuses) otherwise. ParseInt alone
// takes a sign ("BDAT +5 LAST"): a sign is no digit, and a size one
// server reads differently from the next is room for smuggling.
func chunkDigits(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}
