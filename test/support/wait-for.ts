/**
 * Polls until `check` returns a truthy value, and returns it; throws with the last error (or
 * "condition not met") after `timeoutMs`. Tests wait for a condition this way, never for a
 * fixed time.
 *
 * The default is what a container start and its first health answer can take on CI's busy
 * 2-core machine (four projects at once, an OpenClaw gateway eating a core while it starts):
 * several seconds, more than 10 now and then. The timeout only decides how long a failing test
 * waits before it says so; a passing one returns as soon as the condition holds.
 */
export const DEFAULT_WAIT_MS = 30_000;

export async function waitFor<T>(
  check: () => Promise<T> | T,
  timeoutMs = DEFAULT_WAIT_MS,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`condition not met within ${timeoutMs} ms${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
