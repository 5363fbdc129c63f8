// Package client is what a user's side of the relay needs: composing an
// RFC 5322 message (Compose), submitting it over SMTP with go-smtp
// (Submit), reading a mailbox over POP3 (POP3), and taking a received
// message apart for display (Parse). It does not import package relay: it
// speaks the same protocols to the daemon that any other client would.
package client

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is a message to compose.
type Message struct {
	From    string   // "a@b.test" or "Name <a@b.test>"
	To      []string // the same forms; the header lists them all
	Subject string   // any UTF-8; encoded per RFC 2047 when not ASCII
	// Date is the Date field; zero means now.
	Date time.Time
	// Headers are extra fields ("X-Tag: v"), in order. The fields Compose
	// writes itself cannot be given here.
	Headers     []Header
	Text        string // the body, UTF-8; line endings become CRLF
	Attachments []Attachment
}

// Header is one extra header field.
type Header struct{ Name, Value string }

// Attachment is a file attached to a message.
type Attachment struct {
	Filename    string // base name shown to the recipient
	ContentType string // "" means guess from the file name's extension
	Data        []byte
}

// ownFields are the fields Compose writes; a Header may not repeat them
// (RFC 5322 §3.6 allows each only once).
var ownFields = []string{"Date", "Message-Id", "From", "To", "Subject", "Mime-Version", "Content-Type", "Content-Transfer-Encoding"}

// ParseHeader parses "Name: value" as given to relay send --header.
func ParseHeader(s string) (Header, error) {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return Header{}, fmt.Errorf("header %q: want \"Name: value\"", s)
	}
	h := Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)}
	if err := h.check(); err != nil {
		return Header{}, err
	}
	return h, nil
}

func (h Header) check() error {
	if h.Name == "" {
		return errors.New("header with an empty name")
	}
	for i := 0; i < len(h.Name); i++ {
		// RFC 5322 §3.6.8 ftext: printable ASCII except ':'.
		if c := h.Name[i]; c <= ' ' || c > '~' || c == ':' {
			return fmt.Errorf("header name %q: only printable ASCII without ':' or spaces", h.Name)
		}
	}
	if strings.ContainsAny(h.Value, "\r\n\x00") {
		return fmt.Errorf("header %s: value holds a line break or NUL", h.Name)
	}
	canon := textproto.CanonicalMIMEHeaderKey(h.Name)
	for _, f := range ownFields {
		if canon == f {
			return fmt.Errorf("header %s is written by relay send itself (use --subject, --from, --to)", h.Name)
		}
	}
	return nil
}

// Compose renders m as an RFC 5322 message with CRLF line endings: Date,
// Message-ID, From, To, Subject and MIME-Version fields, a text/plain
// UTF-8 body (7bit when it is short-lined ASCII, else quoted-printable),
// and, with attachments, a multipart/mixed body whose attachments are
// base64. It returns the message and the parsed From and To addresses
// for the envelope.
func Compose(m *Message) (msg []byte, from *mail.Address, to []*mail.Address, err error) {
	if from, err = mail.ParseAddress(m.From); err != nil {
		return nil, nil, nil, fmt.Errorf("from address %q: %w", m.From, err)
	}
	if len(m.To) == 0 {
		return nil, nil, nil, errors.New("no recipient")
	}
	for _, s := range m.To {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("to address %q: %w", s, err)
		}
		to = append(to, a)
	}
	for _, h := range m.Headers {
		if err := h.check(); err != nil {
			return nil, nil, nil, err
		}
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID, err := messageID(from.Address)
	if err != nil {
		return nil, nil, nil, err
	}
	var b bytes.Buffer
	writeField(&b, "Date", date.Format(time.RFC1123Z))
	writeField(&b, "Message-ID", msgID)
	writeField(&b, "From", formatAddress(from))
	tos := make([]string, len(to))
	for i, a := range to {
		tos[i] = formatAddress(a)
	}
	writeField(&b, "To", strings.Join(tos, ", "))
	if m.Subject != "" {
		writeField(&b, "Subject", encodeWords(m.Subject))
	}
	for _, h := range m.Headers {
		writeField(&b, h.Name, encodeWords(h.Value))
	}
	writeField(&b, "MIME-Version", "1.0")
	text := toCRLF(m.Text)
	if text != "" && !strings.HasSuffix(text, "\r\n") {
		text += "\r\n"
	}
	if len(m.Attachments) == 0 {
		writeTextPart(&b, text)
		return b.Bytes(), from, to, nil
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	writeField(&b, "Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()}))
	b.WriteString("\r\nThis is a MIME message with attachments.\r\n")
	th := textproto.MIMEHeader{}
	var part bytes.Buffer
	ctype, cte := textEncoding(text)
	th.Set("Content-Type", ctype)
	th.Set("Content-Transfer-Encoding", cte)
	pw, _ := mw.CreatePart(th)
	writeTextBody(&part, text, cte)
	pw.Write(part.Bytes())
	for _, a := range m.Attachments {
		ah := textproto.MIMEHeader{}
		ct := a.ContentType
		if ct == "" {
			ct = mime.TypeByExtension(filepath.Ext(a.Filename))
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		name := filepath.Base(a.Filename)
		ah.Set("Content-Type", ct)
		// FormatMediaType uses RFC 2231 for a non-ASCII name, and returns
		// "" for an invalid type, which is refused rather than sent.
		disp := mime.FormatMediaType("attachment", map[string]string{"filename": name})
		if disp == "" || !strings.Contains(ct, "/") {
			return nil, nil, nil, fmt.Errorf("attachment %q: cannot describe it (content type %q)", a.Filename, ct)
		}
		ah.Set("Content-Disposition", disp)
		ah.Set("Content-Transfer-Encoding", "base64")
		pw, _ := mw.CreatePart(ah)
		writeBase64(pw, a.Data)
	}
	mw.Close()
	b.Write(body.Bytes())
	return b.Bytes(), from, to, nil
}

// formatAddress writes a bare address when there is no display name
// (mail.Address.String would write "<a@b>"), and encodes a non-ASCII name
// per RFC 2047.
func formatAddress(a *mail.Address) string {
	if a.Name == "" {
		return a.Address
	}
	return a.String()
}

// messageID makes a Message-ID that is unique without coordination: 128
// random bits, at the sender's domain.
func messageID(fromAddr string) (string, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("message ID: %w", err)
	}
	domain := "localhost"
	if i := strings.LastIndexByte(fromAddr, '@'); i >= 0 && i+1 < len(fromAddr) {
		domain = fromAddr[i+1:]
	}
	return "<" + hex.EncodeToString(r[:]) + "@" + domain + ">", nil
}

// encodeWords encodes a header value per RFC 2047 when it is not ASCII;
// ASCII is left alone.
func encodeWords(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}

// writeField writes "Name: value" folded at spaces so that lines stay
// within 78 characters where the value allows (RFC 5322 §2.1.1).
func writeField(b *bytes.Buffer, name, value string) {
	line := name + ":"
	for i, word := range strings.Split(value, " ") {
		if i > 0 || word != "" {
			if len(line)+1+len(word) > 78 && strings.TrimSpace(line) != name+":" {
				b.WriteString(line + "\r\n")
				line = ""
			}
			line += " " + word
		}
	}
	b.WriteString(line + "\r\n")
}

// toCRLF makes every line ending CRLF.
func toCRLF(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// textEncoding chooses how to send a text body: 7bit when it is ASCII
// with lines of at most 998 octets (RFC 5322 §2.1.1), quoted-printable
// otherwise, which is safe through any relay.
func textEncoding(text string) (contentType, cte string) {
	contentType = "text/plain; charset=utf-8"
	if !utf8.ValidString(text) {
		contentType = "application/octet-stream"
	}
	for _, line := range strings.Split(text, "\r\n") {
		if len(line) > 998 {
			return contentType, "quoted-printable"
		}
	}
	for i := 0; i < len(text); i++ {
		if text[i] >= 0x80 || (text[i] < ' ' && text[i] != '\r' && text[i] != '\n' && text[i] != '\t') {
			return contentType, "quoted-printable"
		}
	}
	return contentType, "7bit"
}

// writeTextPart writes the Content-Type and Content-Transfer-Encoding
// fields, the blank line and the body of a single-part text message.
func writeTextPart(b *bytes.Buffer, text string) {
	ctype, cte := textEncoding(text)
	writeField(b, "Content-Type", ctype)
	writeField(b, "Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	writeTextBody(b, text, cte)
}

func writeTextBody(b *bytes.Buffer, text, cte string) {
	if cte == "7bit" {
		b.WriteString(text)
		return
	}
	qw := quotedprintable.NewWriter(b)
	qw.Write([]byte(text))
	qw.Close()
}

// writeBase64 writes data in base64 lines of 76 characters (RFC 2045
// §6.8).
func writeBase64(w interface{ Write([]byte) (int, error) }, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		w.Write([]byte(enc[:76] + "\r\n"))
		enc = enc[76:]
	}
	if enc != "" {
		w.Write([]byte(enc + "\r\n"))
	}
}
