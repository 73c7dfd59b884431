package ownership

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

const fenceSQL = `SELECT owner, epoch FROM cuesched.cluster WHERE id = $1 FOR SHARE`

// Fence proves, first thing in a booking transaction, that this instance
// owns the cluster at the epoch it acquired it: it reads the cluster's row
// FOR SHARE, so a takeover (which updates the row) waits until tx ends and
// a booking that passed cannot race one. An error wrapping ErrNotOwner means
// the booking must not proceed (roll tx back); another error is the
// database's.
func (c *Coordinator) Fence(ctx context.Context, tx pgx.Tx, clusterID int32) error {
	inst, claim, ok := c.claim(clusterID)
	if !ok {
		return fmt.Errorf("fence cluster %d: not in this instance's view: %w", clusterID, ErrNotOwner)
	}
	var owner *int32
	var epoch int64
	err := tx.QueryRow(ctx, fenceSQL, clusterID).Scan(&owner, &epoch)
	return c.check(clusterID, inst, claim, owner, epoch, err)
}

// Queue adds the same proof to a booking's first batch (dispatch.Fence):
// the batch's result handler returns the error, wrapping ErrNotOwner and
// Options.Fenced when the proof fails.
func (c *Coordinator) Queue(b *pgx.Batch, clusterID int32) {
	inst, claim, ok := c.claim(clusterID)
	b.Queue(fenceSQL, clusterID).QueryRow(func(r pgx.Row) error {
		var owner *int32
		var epoch int64
		err := r.Scan(&owner, &epoch)
		if err == nil && !ok {
			err = fmt.Errorf("fence cluster %d: not in this instance's view: %w", clusterID, ErrNotOwner)
		} else {
			err = c.check(clusterID, inst, claim, owner, epoch, err)
		}
		if err != nil && c.opts.Fenced != nil && errors.Is(err, ErrNotOwner) {
			err = fmt.Errorf("%w: %w", c.opts.Fenced, err)
		}
		return err
	})
}

// claim is the claim this instance holds on a cluster, with its
// registration id.
func (c *Coordinator) claim(clusterID int32) (int32, Claim, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.byID[clusterID]
	return c.view.Instance, cl, ok && c.view.Instance != 0
}

// check compares the row a fence read with the claim held when the fence was
// taken, and with the view now: a claim given up meanwhile (a handover under
// way) fails too, so the giver's update need not wait for a new booking.
func (c *Coordinator) check(clusterID, inst int32, claim Claim, owner *int32, epoch int64, err error) error {
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("fence cluster %d: the cluster no longer exists: %w", clusterID, ErrNotOwner)
	case err != nil:
		return fmt.Errorf("fence cluster %d: %w", clusterID, err)
	case owner == nil || *owner != inst || epoch != claim.Epoch:
		o := int32(0)
		if owner != nil {
			o = *owner
		}
		return fmt.Errorf("fence cluster %d: owned by instance %d at epoch %d, this instance %d holds epoch %d: %w",
			clusterID, o, epoch, inst, claim.Epoch, ErrNotOwner)
	}
	if nowInst, now, ok := c.claim(clusterID); !ok || nowInst != inst || now.Epoch != claim.Epoch {
		return fmt.Errorf("fence cluster %d: given up by this instance meanwhile: %w", clusterID, ErrNotOwner)
	}
	return nil
}
