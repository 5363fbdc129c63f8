package client

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// Parsed is a received message taken apart for reading.
type Parsed struct {
	Header mail.Header // the fields as received, not decoded
	// Date is the Date field; zero when it is missing or unreadable.
	Date time.Time
	// From, To and Subject are decoded from RFC 2047 encoded-words.
	From, To, Subject string
	// Text is the message's text: its text/plain parts (or, where a part
	// offers only HTML, that), with quoted-printable and base64 undone,
	// in UTF-8.
	Text string
	// Attachments are the other parts, decoded.
	Attachments []Attachment
}

// maxMIMEDepth bounds nested multiparts: a hostile message must not make
// the reader recurse without end.
const maxMIMEDepth = 20

// Parse takes a message apart. Only a message whose header cannot be read
// is an error; a body that does not follow MIME is shown as it is.
func Parse(raw []byte) (*Parsed, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("reading message header: %w", err)
	}
	p := &Parsed{Header: m.Header}
	p.Date, _ = m.Header.Date()
	p.From = displayAddresses(m.Header.Get("From"))
	p.To = displayAddresses(m.Header.Get("To"))
	p.Subject = DecodeHeader(m.Header.Get("Subject"))
	body, _ := io.ReadAll(m.Body)
	var texts []string
	p.walk(m.Header, body, 0, &texts)
	p.Text = strings.Join(texts, "\n")
	return p, nil
}

// DecodeHeader decodes RFC 2047 encoded-words; text it cannot decode is
// returned as it is.
func DecodeHeader(s string) string {
	dec := mime.WordDecoder{CharsetReader: charsetReader}
	if d, err := dec.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// displayAddresses renders an address field for people: names decoded
// and without the quotes RFC 5322 may need ("Ann Example <a@b>"). A field
// that does not parse as addresses is shown decoded as it is.
func displayAddresses(field string) string {
	list, err := (&mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: charsetReader}}).ParseList(field)
	if err != nil {
		return DecodeHeader(field)
	}
	out := make([]string, len(list))
	for i, a := range list {
		if a.Name == "" {
			out[i] = a.Address
		} else {
			out[i] = a.Name + " <" + a.Address + ">"
		}
	}
	return strings.Join(out, ", ")
}

// partHeader is what the walk needs of a header: mail.Header and
// textproto.MIMEHeader both have it.
type partHeader interface{ Get(string) string }

// walk adds the text and attachments of one MIME entity to p.
func (p *Parsed) walk(h partHeader, body []byte, depth int, texts *[]string) {
	ctype, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		ctype, params = "text/plain", map[string]string{"charset": "us-ascii"}
	}
	data := decodeTransfer(h.Get("Content-Transfer-Encoding"), body)
	disp, dparams, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	filename := dparams["filename"]
	if filename == "" {
		filename = params["name"]
	}
	filename = DecodeHeader(filename)
	switch {
	case strings.HasPrefix(ctype, "multipart/") && depth < maxMIMEDepth:
		parts := p.readParts(body, params["boundary"])
		if ctype == "multipart/alternative" {
			// One of the alternatives: plain text when there is one.
			best := -1
			for i, pt := range parts {
				if ct, _, _ := mime.ParseMediaType(pt.h.Get("Content-Type")); ct == "text/plain" {
					best = i
					break
				}
			}
			if best < 0 && len(parts) > 0 {
				best = 0
			}
			if best >= 0 {
				parts = parts[best : best+1]
			}
		}
		for _, pt := range parts {
			p.walk(pt.h, pt.body, depth+1, texts)
		}
	case disp != "attachment" && (ctype == "text/plain" || ctype == "text/html"):
		*texts = append(*texts, toUTF8(params["charset"], data))
	default:
		p.Attachments = append(p.Attachments, Attachment{Filename: filename, ContentType: ctype, Data: data})
	}
}

type part struct {
	h    partHeader
	body []byte
}

// readParts splits a multipart body; what cannot be read is left out.
func (p *Parsed) readParts(body []byte, boundary string) []part {
	if boundary == "" {
		return nil
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out []part
	for {
		// NextRawPart: the transfer encoding is undone by walk, the same
		// way for every part.
		pt, err := mr.NextRawPart()
		if err != nil {
			return out
		}
		b, err := io.ReadAll(pt)
		if err != nil {
			return out
		}
		out = append(out, part{h: pt.Header, body: b})
	}
}

// decodeTransfer undoes a Content-Transfer-Encoding; data that does not
// decode is returned as it is.
func decodeTransfer(cte string, data []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, data)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return data
		}
		return out[:n]
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(data)))
		if err != nil {
			return data
		}
		return out
	}
	return data
}

// toUTF8 converts text in charset to UTF-8: UTF-8 and ASCII as they are,
// Latin-1 byte by byte; other charsets are shown as they are.
func toUTF8(charset string, data []byte) string {
	switch strings.ToLower(charset) {
	case "iso-8859-1", "latin1", "windows-1252":
		if !utf8.Valid(data) {
			r := make([]rune, len(data))
			for i, b := range data {
				r[i] = rune(b)
			}
			return string(r)
		}
	}
	return string(data)
}

// charsetReader lets the header decoder read Latin-1 as well as UTF-8.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "iso-8859-1", "latin1", "windows-1252":
		b, err := io.ReadAll(input)
		if err != nil {
			return nil, err
		}
		return strings.NewReader(toUTF8("iso-8859-1", b)), nil
	}
	return nil, fmt.Errorf("charset %q not supported", charset)
}
