package libvirt

import (
	"context"

	"github.com/haven-ha/haven/internal/hypervisor"
)

// detectAccel says whether guests here can run under KVM, with the reason;
// the shared probe of package hypervisor (a variable, for tests).
var detectAccel = func(ctx context.Context) hypervisor.AccelInfo {
	return hypervisor.DetectAccelCached(ctx, "")
}
