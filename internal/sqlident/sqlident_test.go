package sqlident_test

import (
	"strings"
	"testing"

	"github.com/edaproject/eda/internal/sqlident"
)

func TestValid(t *testing.T) {
	for name, want := range map[string]bool{
		"eda_outbox": true, "_x1": true, "a": true, strings.Repeat("a", 63): true,
		"": false, "1abc": false, "Outbox": false, "a-b": false, "a.b": false, `a"; drop`: false,
		strings.Repeat("a", 64): false,
	} {
		if got := sqlident.Valid(name, sqlident.MaxLen); got != want {
			t.Errorf("Valid(%q) = %v, want %v", name, got, want)
		}
	}
	if sqlident.Valid("abcdef", 5) {
		t.Error("a name over maxLen is valid")
	}
}
