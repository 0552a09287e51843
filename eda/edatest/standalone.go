package edatest

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// Standalone runs body as a test outside `go test`'s test functions (an
// Example, a smoke-test program): it gives body a TB whose Fatalf ends body
// like t.Fatalf, runs the cleanups body registered when it returns, last
// first, and returns every failure reported, joined (nil when none). Logf
// discards.
func Standalone(body func(t TB)) error {
	st := &standalone{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				st.Errorf("panic: %v", r)
			}
		}()
		body(st)
	}()
	<-done
	for {
		st.mu.Lock()
		n := len(st.cleanups)
		if n == 0 {
			st.mu.Unlock()
			break
		}
		f := st.cleanups[n-1]
		st.cleanups = st.cleanups[:n-1]
		st.mu.Unlock()
		st.runCleanup(f)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return errors.Join(st.errs...)
}

type standalone struct {
	mu       sync.Mutex
	errs     []error
	cleanups []func()
}

func (s *standalone) runCleanup(f func()) {
	done := make(chan struct{})
	go func() { // a cleanup may call Fatalf, which ends its goroutine
		defer close(done)
		f()
	}()
	<-done
}

func (s *standalone) Helper() {}

func (s *standalone) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *standalone) Errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Errorf(format, args...))
}

func (s *standalone) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	runtime.Goexit()
}

func (s *standalone) Logf(string, ...any) {}
