package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// Logging returns middleware that writes one structured record per delivery
// when the handler is done: Debug "eda: message handled" on success, Warn
// "eda: message poisoned" when Poison (inside it) poisoned the message, Error
// "eda: handler failed" when the error goes back to the broker. Each carries
// the event id, type, correlation id, queue, handler, receive count,
// attempts and duration. A nil logger discards.
func Logging(logger *slog.Logger) message.HandlerMiddleware {
	logger = orDiscard(logger)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			if !logger.Enabled(ctx, slog.LevelError) { // a discarding logger costs nothing
				return h(msg)
			}
			rec := recordOf(msg)
			ctx = msg.Context()
			start := time.Now()
			out, err := h(msg)
			msg.SetContext(ctx)
			level, text := slog.LevelDebug, "eda: message handled"
			switch {
			case err != nil:
				level, text = slog.LevelError, "eda: handler failed"
			case rec.poisoned != "":
				level, text = slog.LevelWarn, "eda: message poisoned"
			}
			if logger.Enabled(ctx, level) {
				logDelivery(ctx, logger, level, text, msg, rec, err, time.Since(start))
			}
			return out, err
		}
	}
}

// logDelivery writes the record of one delivery.
func logDelivery(ctx context.Context, logger *slog.Logger, level slog.Level, text string, msg *message.Message, rec *record, err error, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("event_id", msg.Metadata.Get(eda.MetadataID)),
		slog.String("event_type", msg.Metadata.Get(eda.MetadataType)),
		slog.String("correlation_id", msg.Metadata.Get(eda.MetadataCorrelationID)),
		slog.String("queue", message.SubscribeTopicFromCtx(ctx)),
		slog.String("handler", message.HandlerNameFromCtx(ctx)),
		slog.String("receive_count", msg.Metadata.Get(transport.MetadataReceiveCount)),
		slog.Int("attempts", max(rec.attempts, 1)),
		slog.Duration("duration", took),
	}
	if rec.poisoned != "" {
		attrs = append(attrs, slog.String("poison_reason", rec.poisoned))
	}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err), slog.Bool("permanent", eda.IsPermanent(err)),
			slog.Bool("shutdown", context.Cause(ctx) != nil))
	}
	logger.LogAttrs(ctx, level, text, attrs...)
}
