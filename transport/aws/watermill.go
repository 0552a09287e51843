package aws

import (
	wmsns "github.com/ThreeDotsLabs/watermill-aws/sns"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/service/sns"
)

// TopicArnMarshaler is watermill-aws's default SNS marshaler with the topic
// in TopicArn instead of TargetArn. Both are valid on AWS; fauxqs (and some
// other emulators) accept only TopicArn ("InvalidParameter: TopicArn is
// required"). Use it in a plain watermill-aws sns.PublisherConfig that talks
// to the emulator; this package's Transport does not need it.
type TopicArnMarshaler struct {
	wmsns.DefaultMarshalerUnmarshaler
}

var _ wmsns.Marshaler = TopicArnMarshaler{}

// Marshal builds the PublishInput with TopicArn set.
func (m TopicArnMarshaler) Marshal(topicArn wmsns.TopicArn, msg *message.Message) *sns.PublishInput {
	in := m.DefaultMarshalerUnmarshaler.Marshal(topicArn, msg)
	in.TopicArn, in.TargetArn = in.TargetArn, nil
	return in
}
