package inbox

import (
	"context"
	"crypto/rand"
	"sync"
	"time"
)

// Memory is a Store in process memory, for tests and single-process
// consumers that may forget on restart. Create it with NewMemory.
type Memory struct {
	mu      sync.Mutex
	entries map[Key]*memEntry
}

type memEntry struct {
	token      string    // of the live claim; "" when done
	leaseUntil time.Time // of the claim
	doneAt     time.Time // zero while claimed
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{entries: map[Key]*memEntry{}} }

// Claim implements Store.
func (m *Memory) Claim(ctx context.Context, key Key, lease time.Duration) (Claim, error) {
	if err := key.Validate(); err != nil {
		return Claim{}, err
	}
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	switch {
	case ok && !e.doneAt.IsZero():
		return Claim{State: Done}, nil
	case ok && now.Before(e.leaseUntil):
		return Claim{State: Busy}, nil
	}
	token := rand.Text()
	m.entries[key] = &memEntry{token: token, leaseUntil: now.Add(lease)}
	return Claim{State: Acquired, Token: token}, nil
}

// Complete implements Store.
func (m *Memory) Complete(ctx context.Context, key Key, token string) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok || e.token != token || token == "" {
		return ErrLeaseLost
	}
	e.token, e.doneAt = "", time.Now()
	return nil
}

// Release implements Store.
func (m *Memory) Release(ctx context.Context, key Key, token string) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && e.token == token && token != "" {
		delete(m.entries, key)
	}
	return nil
}

// Expire implements Store.
func (m *Memory) Expire(ctx context.Context, before time.Time) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, e := range m.entries {
		if (!e.doneAt.IsZero() && e.doneAt.Before(before)) || (e.doneAt.IsZero() && e.leaseUntil.Before(before)) {
			delete(m.entries, k)
			n++
		}
	}
	return n, nil
}
