package relay

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/relay-mta/relay/queue"
)

// routeFiles is what a route's sending reads from files when the relay
// starts: the smarthost password and the CA roots of tls_ca_file.
type routeFiles struct {
	auth  *queue.Auth
	roots *x509.CertPool
}

// LoadRouteFiles reads the password and CA files of cfg's routes and
// gives them to r. A password file that group or others may read is
// refused, as ssh refuses a private key they may read: the password would
// be no secret. Errors name the route and the file.
func (r *Router) LoadRouteFiles() error {
	r.secrets = map[string]routeFiles{}
	for i, rt := range r.cfg.Routes {
		var f routeFiles
		if rt.AuthUser != "" {
			pw, err := readPasswordFile(rt.AuthPasswordFile)
			if err != nil {
				return fmt.Errorf("route[%d] (%s): auth_password_file: %w", i, rt.Domain, err)
			}
			f.auth = &queue.Auth{User: rt.AuthUser, Password: pw}
		}
		if rt.TLSCAFile != "" {
			pem, err := os.ReadFile(rt.TLSCAFile)
			if err != nil {
				return fmt.Errorf("route[%d] (%s): tls_ca_file: %w", i, rt.Domain, err)
			}
			f.roots = x509.NewCertPool()
			if !f.roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("route[%d] (%s): tls_ca_file %s: no PEM certificate in it", i, rt.Domain, rt.TLSCAFile)
			}
		}
		if f.auth != nil || f.roots != nil {
			r.secrets[normRouteDomain(rt.Domain)] = f
		}
	}
	return nil
}

// readPasswordFile returns the first line of path, which must not be
// readable by group or others.
func readPasswordFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", err
	}
	if perm := st.Mode().Perm(); perm&0o044 != 0 {
		return "", fmt.Errorf("%s is readable by group or others (mode %04o); chmod 600 it", path, perm)
	}
	line, err := bufio.NewReader(fh).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return "", fmt.Errorf("%s: empty", path)
	}
	pw := string(bytes.TrimRight(line, "\r\n"))
	if pw == "" || strings.ContainsAny(pw, "\x00") {
		return "", fmt.Errorf("%s: the first line holds no usable password", path)
	}
	return pw, nil
}
