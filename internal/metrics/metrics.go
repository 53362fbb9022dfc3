// Package metrics owns Haven's Prometheus metrics: their names, help and
// buckets, registered once in the default registry that the agents serve
// at /metrics (with the embedded etcd's own metrics and the Go runtime's).
// docs/metrics.md documents each; the packages that measure (control,
// store) only observe.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/haven-ha/haven/internal/version"
)

// Latency buckets, seconds: recoveries take seconds to minutes.
var recoveryBuckets = []float64{0.5, 1, 2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120, 300}

var (
	// BuildInfo is 1, labelled with this binary's version.
	BuildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_build_info",
		Help: "Always 1; labels say which Haven build this agent runs.",
	}, []string{"version", "revision", "goversion"})

	// Guests counts the guests by manager state (exported by the manager).
	Guests = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_guests",
		Help: "Guests by the manager's state (started, stopped, recovering, fencing, failed, disabled, frozen). Exported by the manager only.",
	}, []string{"state"})

	// Hosts counts the hosts by manager status (exported by the manager).
	Hosts = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "haven_hosts",
		Help: "Hosts by the manager's status (online, offline, failed, fenced, left, maintenance). Exported by the manager only.",
	}, []string{"status"})

	// IsManager is 1 on the agent that holds the manager office.
	IsManager = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "haven_manager",
		Help: "1 while this agent is the cluster's manager, else 0.",
	})

	// Fences counts fence operations by result.
	Fences = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_fences_total",
		Help: "Fence operations run by this agent as manager, by result (ok, failed).",
	}, []string{"result"})

	// Recovery measures a recovery from the fault the manager saw to the
	// order that starts the guest again, and to the guest running.
	Recovery = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "haven_recovery_seconds",
		Help:    "From the fault the manager saw (host lease expired: kind=failover; guest crashed: kind=restart) to the start order (phase=order) and to the guest running again (phase=running).",
		Buckets: recoveryBuckets,
	}, []string{"kind", "phase"})

	// ManagerStep measures one step of the manager: the core's decision,
	// saving its state and sending its orders.
	ManagerStep = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "haven_manager_step_seconds",
		Help:    "Duration of one manager step: decide, save the state, write the orders.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})

	// StoreWrite measures the manager's writes to the store.
	StoreWrite = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "haven_store_write_seconds",
		Help:    "Latency of the manager's store writes by operation (save_state: the manager state after a step).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"op"})

	// Keepalive measures this host's lease renewals.
	Keepalive = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "haven_lease_keepalive_seconds",
		Help:    "Latency of this host's liveness lease renewals (a store round trip).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
)

func init() {
	BuildInfo.WithLabelValues(version.String(), version.Revision(), runtime.Version()).Set(1)
}
