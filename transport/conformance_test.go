package transport_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/transporttest"
)

// Adapt over gochannel passes the suite with the features it declares
// (none): competing consumers, fan-out, redelivery, shutdown without loss.
func TestAdaptGoChannelConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			return transport.Adapt(ps, ps)
		},
	})
}

// AdaptQueues with a subscriber per queue. gochannel has no consumer groups
// (one gochannel is both ends), so each queue gets the shared one: the suite
// checks the per-queue plumbing and that Close closes it once.
func TestAdaptQueuesConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			return transport.AdaptQueues(ps, func(string) (message.Subscriber, error) { return ps, nil })
		},
	})
}
