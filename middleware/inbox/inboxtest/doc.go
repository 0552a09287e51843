// Package inboxtest is the conformance suite every inbox.Store passes, as
// transporttest is for transports. A store's own test calls Run with a
// constructor of fresh, empty stores, and RunMiddleware to run the
// standalone inbox middleware on it through an eda.App:
//
//	func TestConformance(t *testing.T) {
//		inboxtest.Run(t, func(t *testing.T) inbox.Store { return newStore(t) })
//		inboxtest.RunMiddleware(t, func(t *testing.T) inbox.Store { return newStore(t) })
//	}
//
// Run checks claims, completion, release, lease takeover with stale tokens,
// consumer independence, concurrent claims (exactly one wins), expiry (old
// marks go, live claims stay), invalid keys and cancelled contexts.
// RunMiddleware checks that duplicates are skipped, a failed handler's
// redelivery is applied, concurrent duplicate deliveries apply the effect
// once, and a handler stopped mid-effect runs again after a restart.
package inboxtest
