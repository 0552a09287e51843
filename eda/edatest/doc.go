// Package edatest lets a service test run its eda handlers on the in-memory
// transport in a few lines and assert what was published, handled and
// dead-lettered, waiting on signals instead of sleeping:
//
//	h := edatest.New(t, edatest.Config{})
//	eda.Register[OrderCreated](h.App, "orders")
//	eda.Handle(h.App, "inventory", reserveStock)
//	h.Start()
//	h.Publish(OrderCreated{ID: "o-1"})
//	h.WaitHandled("inventory", 1)
//	edatest.RequirePublished[StockReserved](t, h, 1)
package edatest
