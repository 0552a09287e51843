package middleware

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrPanic matches (errors.Is) every *PanicError.
var ErrPanic = errors.New("eda: handler panicked")

// PanicError is a panic in a handler, turned into an error by Recover.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the panicking goroutine's stack.
	Stack []byte
}

// Error returns the panic value followed by the stack, so the stack reaches
// logs and the poison topic's MetadataPoisonError.
func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %v\n\n%s", e.Value, e.Stack)
}

// Is reports whether target is ErrPanic.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Recover is middleware that turns a panic in the handler into a
// *PanicError, an ordinary (transient) error: put it innermost, so Retry
// retries it and Poison poisons it like any other failure. Without it a
// panic reaches the Watermill router, which nacks the message without
// letting the outer middleware see why.
func Recover(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if v := recover(); v != nil {
				out, err = nil, &PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		return h(msg)
	}
}
