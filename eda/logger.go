package eda

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// slogAdapter gives Watermill a *slog.Logger. Unlike watermill.NewSlogLogger
// it asks the handler whether a level is enabled before building attributes,
// so the router's per-message trace and debug lines cost nothing when they
// are off.
type slogAdapter struct {
	l *slog.Logger
}

func newLoggerAdapter(l *slog.Logger) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return slogAdapter{l: l}
}

// levelTrace is below slog.LevelDebug, as Watermill's own slog adapter uses.
const levelTrace = slog.LevelDebug - 4

func (a slogAdapter) log(level slog.Level, msg string, err error, fields watermill.LogFields) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields)+1)
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	a.l.LogAttrs(ctx, level, msg, attrs...)
}

func (a slogAdapter) Error(msg string, err error, fields watermill.LogFields) {
	a.log(slog.LevelError, msg, err, fields)
}
func (a slogAdapter) Info(msg string, fields watermill.LogFields) {
	a.log(slog.LevelInfo, msg, nil, fields)
}
func (a slogAdapter) Debug(msg string, fields watermill.LogFields) {
	a.log(slog.LevelDebug, msg, nil, fields)
}
func (a slogAdapter) Trace(msg string, fields watermill.LogFields) {
	a.log(levelTrace, msg, nil, fields)
}
func (a slogAdapter) With(fields watermill.LogFields) watermill.LoggerAdapter {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return slogAdapter{l: a.l.With(args...)}
}
