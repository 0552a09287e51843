// Package transportprom exports queue depths to Prometheus: for each queue
// (typically an App's queues and their dead-letter queues) the visible,
// in-flight and delayed message counts and the age of the oldest message,
// as a transport.Inspector reads them.
//
// Readings are taken by a poller at Config.Interval and cached: a scrape
// reports the last reading and never calls the broker, so the broker load
// does not grow with the number of Prometheus servers or their scrape rate,
// and counting a deep Postgres queue happens once per interval. Start the
// poller with Collector.Run.
package transportprom
