package config

import (
	"net/url"
	"regexp"
	"strings"
)

const mask = "xxxxx"

// kvSetting matches a libpq key=value setting that names a connection.
var kvSetting = regexp.MustCompile(`(?i)(^|\s)(host|hostaddr|port|dbname|user|password|sslmode|service)\s*=`)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)`)

// RedactDSN returns dsn with its password masked, in either libpq form.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// Unparseable URLs are masked wholesale after the scheme rather
			// than risk printing a password.
			scheme, _, _ := strings.Cut(dsn, "://")
			return scheme + "://" + mask
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), mask)
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", mask)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}"+mask)
}

// Secrets returns the literal secrets a DSN holds, so any text (an error from
// a driver, say) can be scrubbed of them with Scrub.
func Secrets(dsn string) []string {
	var out []string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, has := u.User.Password(); has && p != "" {
			out = append(out, p)
		}
		if p := u.Query().Get("password"); p != "" {
			out = append(out, p)
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		p := strings.Trim(m[2], "'")
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Scrub masks every secret in s.
func Scrub(s string, secrets []string) string {
	for _, p := range secrets {
		s = strings.ReplaceAll(s, p, mask)
	}
	return s
}

// LooksLikeDSN tells whether s is a connection string in either libpq form,
// so a misplaced one can be told apart from any other stray argument.
func LooksLikeDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") || kvSetting.MatchString(s)
}
