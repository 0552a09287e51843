package inbox_test

import (
	"testing"

	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/inboxtest"
)

func TestMemoryStore(t *testing.T) {
	inboxtest.Run(t, func(*testing.T) inbox.Store { return inbox.NewMemory() })
}

func TestMiddlewareOnMemoryStore(t *testing.T) {
	inboxtest.RunMiddleware(t, func(*testing.T) inbox.Store { return inbox.NewMemory() })
}
