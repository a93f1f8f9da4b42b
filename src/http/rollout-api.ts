import type { Router } from 'express';

/**
 * Fleet rollouts on the admin API, for `blytz rollout status|pause|resume|undo`. Mounted by
 * `adminApiRouter` under its prefix, so the admin token, JSON errors and the 404 fallback apply.
 */

export const ROLLOUTS_SUBPATH = '/rollouts';

export type RolloutAction = 'pause' | 'resume' | 'undo';

export interface RolloutApi {
  /** The current rollout per template/plan, with counts (the controller's view in the store). */
  list(): Promise<unknown[]>;
  /**
   * Applies the action to the current rollouts; resolves to how many it changed. `restoreState`
   * (undo only): the customers sent back also get their state from before the update back.
   */
  act(action: RolloutAction, options?: { restoreState?: boolean }): Promise<number>;
}

export function registerRolloutRoutes(router: Router, prefix: string, api: RolloutApi): void {
  router.get(`${prefix}${ROLLOUTS_SUBPATH}`, async (_req, res) => {
    res.json({ apiVersion: 'blytz.cloud/v1alpha1', kind: 'RolloutList', metadata: {}, items: await api.list() });
  });
  for (const action of ['pause', 'resume', 'undo'] as const) {
    router.post(`${prefix}${ROLLOUTS_SUBPATH}/${action}`, async (req, res) => {
      const body = (req.body ?? {}) as { restoreState?: unknown };
      const affected = await api.act(action, action === 'undo' && body.restoreState === true ? { restoreState: true } : {});
      res.json({ action, affected, items: await api.list() });
    });
  }
}
