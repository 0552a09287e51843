// Package sqlident checks the schema and table names eda's SQL stores accept
// in their configs: lower-case SQL identifiers that need no quoting, so they
// can be written into statements as they are.
package sqlident

// MaxLen is Postgres's identifier limit (NAMEDATALEN - 1).
const MaxLen = 63

// Valid reports whether name is a lower-case identifier ([a-z_][a-z0-9_]*)
// of at most maxLen characters.
func Valid(name string, maxLen int) bool {
	if name == "" || len(name) > maxLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_' || c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
