import { ContainerNotRunningError } from '../../runtime/exec-output.js';
import type { CustomerRuntime } from '../../runtime/runtime.js';

/**
 * Telegram pairing: OpenClaw answers a stranger writing to the customer's bot with a pairing
 * code, and only `openclaw pairing approve telegram <CODE>` run inside the customer's own
 * container lets that person in. This is the one place that knows the command; the HTTP layer
 * gets the function below injected, so it never touches the runtime.
 */

/** OpenClaw's pairing codes: 8 characters, capital letters and digits. */
export const PAIRING_CODE = /^[A-Z0-9]{8}$/;

export type PairingOutcome =
  /** OpenClaw approved the code. */
  | 'approved'
  /** OpenClaw did not know the code: wrong, already used or expired. */
  | 'rejected'
  /** No running container to ask: the assistant is not up (yet, or any more). */
  | 'not_running';

export type ApprovePairing = (customer: string, code: string) => Promise<PairingOutcome>;

export interface PairingOptions {
  /** How long the command may take; OpenClaw answers in well under a second. Default 15 s. */
  timeoutMs?: number;
}

/**
 * Builds `approvePairing` on a runtime. Runtime errors (engine down, exec timeout) propagate:
 * they are not an answer about the code, and the caller maps them to 503/504.
 */
export function pairingApprover(
  runtime: Pick<CustomerRuntime, 'listFor' | 'exec'>,
  options: PairingOptions = {},
): ApprovePairing {
  const timeoutMs = options.timeoutMs ?? 15_000;
  return async (customer, code) => {
    // Checked again here, not only in the router: the code becomes an argv element inside the
    // customer's container, and no caller should be able to smuggle an option into it.
    if (!PAIRING_CODE.test(code)) throw new RangeError('a pairing code is 8 characters, A-Z and 0-9');
    const running = (await runtime.listFor(customer)).find((c) => c.state === 'running');
    if (!running) return 'not_running';
    try {
      const result = await runtime.exec(running.id, ['openclaw', 'pairing', 'approve', 'telegram', code], timeoutMs);
      return result.exitCode === 0 ? 'approved' : 'rejected';
    } catch (error) {
      // Stopped between the listing and the exec, or (Kubernetes) its pod is not up yet.
      if (error instanceof ContainerNotRunningError) return 'not_running';
      throw error;
    }
  };
}
