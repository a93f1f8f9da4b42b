import type { Readable } from 'node:stream';
import type { WrittenArchive } from './archive.js';

/**
 * A customer's OpenClaw state folder, as the backup controller sees it, whichever runtime holds
 * it: a folder on this host bind-mounted into the container (Docker, `folder-state.ts`), or a
 * PersistentVolumeClaim reached through the customer's pod, and written through a restore pod
 * (Kubernetes, `pod-state.ts`).
 *
 * A restore goes in steps the controller records, so a crash resumes at the step it was in:
 * `stage` unpacks and checks the whole archive somewhere that is not yet the customer's state,
 * `swap` makes it the customer's state (resumable: it finds where an interrupted swap stopped),
 * `discard` throws a staged state away (a failed restore leaves the customer as it was).
 */
export interface CustomerStateSource {
  readonly runtime: 'docker' | 'kubernetes';
  /** Whether a restore can write this runtime's state (on Kubernetes: given its restore pods). */
  readonly restorable: boolean;
  /** Whether the customer has a state folder at all. */
  exists(customer: string): Promise<boolean>;
  /** A consistent archive of the customer's state in `outFile` (see archive.ts); sealed unless `sealed: false`. */
  archive(
    customer: string,
    options: { key: Buffer; context: string; outFile: string; meta: Record<string, string>; sealed?: boolean },
  ): Promise<WrittenArchive>;
  /** Unpacks `input` (checked against the keys, context and checksum) as restore `restoreId`'s staged state. */
  stage(
    restoreId: number,
    customer: string,
    input: Readable,
    check: { keys: readonly Buffer[]; expectContext: string; sha256?: string | undefined },
  ): Promise<void>;
  /** Makes the staged state the customer's; idempotent and resumable. */
  swap(restoreId: number, customer: string): Promise<void>;
  /** Removes what restore `restoreId` of `customer` left aside (the staged state, or the state it replaced). */
  discard(restoreId: number, customer: string): Promise<void>;
  /**
   * A state that lives in a folder on this host (Docker): the host path of the mark restore
   * `restoreId` leaves in the restored folder, which a container sees only when it mounted the
   * folder after the swap (a container started across the swap keeps the replaced one mounted).
   * `forgetRestoredMark` removes it once the restore is through.
   */
  restoredMark?(restoreId: number, customer: string): string;
  forgetRestoredMark?(restoreId: number, customer: string): Promise<void>;
}
