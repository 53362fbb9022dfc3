package testbed

import (
	"context"
	"testing"
)

// BenchmarkBedUpDown measures building and tearing down a 3-host bed.
func BenchmarkBedUpDown(b *testing.B) {
	ForTest(b, Options{Hosts: 1}) // skips without root
	for b.Loop() {
		bed, err := New(context.Background(), Options{Hosts: 3})
		if err != nil {
			b.Fatal(err)
		}
		if err := bed.Destroy(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPowerOffOn measures pulling a host's plug with one process in it,
// and powering it on again.
func BenchmarkPowerOffOn(b *testing.B) {
	bed := ForTest(b, Options{Hosts: 2})
	h := bed.MustHost("h1")
	for b.Loop() {
		if _, err := h.Start(context.Background(), Spec{Path: "sleep", Args: []string{"1000"}, Mode: NetOnly}); err != nil {
			b.Fatal(err)
		}
		if err := bed.PowerOff(context.Background(), "h1"); err != nil {
			b.Fatal(err)
		}
		if err := bed.PowerOn(context.Background(), "h1"); err != nil {
			b.Fatal(err)
		}
	}
}
