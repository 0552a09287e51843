package transportprom_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/transportprom"
)

func Example() {
	ctx := context.Background()
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	queues := []transport.Queue{{Name: "billing", Topics: []string{"orders"}, MaxReceiveCount: 5}}
	for _, q := range queues {
		_ = tr.Declare(ctx, q)
	}
	_ = tr.Publish("orders", message.NewMessage("1", nil), message.NewMessage("2", nil))

	col, _ := transportprom.New(transportprom.Config{Inspector: tr, Queues: transportprom.Queues(queues)})
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	col.Read(ctx) // in a service: go col.Run(ctx), which reads every Interval

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "eda_queue_messages" {
			continue
		}
		for _, m := range mf.GetMetric() {
			fmt.Println(m.GetLabel()[0].GetValue(), m.GetLabel()[1].GetValue(), m.GetGauge().GetValue())
		}
	}
	// Output:
	// billing delayed 0
	// billing inflight 0
	// billing visible 2
	// billing-dlq delayed 0
	// billing-dlq inflight 0
	// billing-dlq visible 0
}
