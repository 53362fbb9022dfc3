package client

import (
	"context"
	"net/url"

	"github.com/haven-ha/haven/internal/api"
)

// CreateVolume creates a volume in a storage pool.
func (c *Client) CreateVolume(ctx context.Context, pool string, req api.VolumeRequest) (*api.Volume, error) {
	var out api.Volume
	err := c.Do(ctx, "POST", "/api/v1/pools/"+url.PathEscape(pool)+"/volumes", req, &out)
	return &out, err
}

// PoolHealth lists every host's latest check of a pool.
func (c *Client) PoolHealth(ctx context.Context, pool string) ([]api.PoolHealthRow, error) {
	var out []api.PoolHealthRow
	err := c.Do(ctx, "GET", "/api/v1/pools/"+url.PathEscape(pool)+"/health", nil, &out)
	return out, err
}
