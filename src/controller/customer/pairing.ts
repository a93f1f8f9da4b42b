import { ContainerNotRunningError } from '../../runtime/exec-output.js';
import type { CustomerRuntime } from '../../runtime/runtime.js';
import { startTimeoutSeconds, type PlanResources } from '../../domain/customer.js';

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
  | { outcome: 'approved' }
  /** OpenClaw did not know the code: wrong, already used or expired. */
  | { outcome: 'rejected' }
  /** No running container to ask: the assistant is not up (yet, or any more). */
  | { outcome: 'not_running' }
  /** The command failed for another reason (it crashed, the config was refused): not the code's fault. */
  | { outcome: 'failed'; message: string };

export type ApprovePairing = (customer: string, code: string) => Promise<PairingOutcome>;

/**
 * How long `openclaw pairing approve` gets: it starts a whole CLI process beside the gateway in
 * the customer's container, measured at 6 to 8 s on an idle host, 12 to 19 s at one CPU, 24 to
 * 27 s at half a CPU, and 48 s at one CPU on a host loaded twenty times over. 90 s at one CPU,
 * more in proportion below it.
 */
export function pairingTimeoutMs(plan: PlanResources): number {
  return startTimeoutSeconds(90, plan) * 1000;
}

export interface PairingOptions {
  /** How long the command may take for this customer; default 90 s. */
  timeoutMs?: (customer: string) => Promise<number>;
}

/** What OpenClaw prints for a code it does not know (exit 1). */
const UNKNOWN_CODE = /no pending pairing request/i;

/**
 * Builds `approvePairing` on a runtime. Runtime errors (engine down, exec timeout) propagate:
 * they are not an answer about the code, and the caller maps them to 503/504.
 */
export function pairingApprover(
  runtime: Pick<CustomerRuntime, 'listFor' | 'exec'>,
  options: PairingOptions = {},
): ApprovePairing {
  const timeoutFor = options.timeoutMs ?? (() => Promise.resolve(90_000));
  return async (customer, code) => {
    // Checked again here, not only in the router: the code becomes an argv element inside the
    // customer's container, and no caller should be able to smuggle an option into it.
    if (!PAIRING_CODE.test(code)) throw new RangeError('a pairing code is 8 characters, A-Z and 0-9');
    const running = (await runtime.listFor(customer)).find((c) => c.state === 'running');
    if (!running) return { outcome: 'not_running' };
    try {
      const result = await runtime.exec(running.id, ['openclaw', 'pairing', 'approve', 'telegram', code], await timeoutFor(customer));
      if (result.exitCode === 0) return { outcome: 'approved' };
      const output = `${result.stdout}\n${result.stderr}`;
      if (result.exitCode === 1 && UNKNOWN_CODE.test(output)) return { outcome: 'rejected' };
      return { outcome: 'failed', message: `openclaw pairing approve exited ${result.exitCode}: ${lastLine(output)}` };
    } catch (error) {
      // Stopped between the listing and the exec, or (Kubernetes) its pod is not up yet.
      if (error instanceof ContainerNotRunningError) return { outcome: 'not_running' };
      throw error;
    }
  };
}

/** The last non-empty line of a command's output, bounded: enough to say why, never a dump. */
function lastLine(output: string): string {
  const line = output.split('\n').map((l) => l.trim()).filter(Boolean).at(-1) ?? '(no output)';
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}
