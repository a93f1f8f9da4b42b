import { Transform, type Readable, type Writable } from 'node:stream';
import type { Exec, V1Pod, V1Status } from '@kubernetes/client-node';
import { ContainerNotRunningError, ExecTimeoutError, OutputCollector } from '../exec-output.js';
import type { ExecResult } from '../runtime.js';

/**
 * `kubectl exec` without a TTY (stdin only when given), through client-node's Exec: a WebSocket to the pod's
 * `exec` subresource, stdout and stderr on channels 1 and 2, and the outcome as a Status on
 * channel 3 (the exit code is in it: Kubernetes has no "inspect the exec" call like Docker's).
 */

export interface PodExecTarget {
  namespace: string;
  pod: string;
  container: string;
}

/**
 * The pod to run a command in, among the pods of one Deployment: a running one that is not
 * being deleted whose `container` runs; a ready one before an unready one, then the newest
 * (during a rollout the new pod is the one the Service will keep).
 */
export function pickExecPod(pods: readonly V1Pod[], container: string): V1Pod | undefined {
  const candidates = pods.filter(
    (pod) =>
      pod.status?.phase === 'Running' &&
      !pod.metadata?.deletionTimestamp &&
      (pod.status.containerStatuses ?? []).some((c) => c.name === container && c.state?.running),
  );
  const ready = (pod: V1Pod) => (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  const created = (pod: V1Pod) => new Date(pod.metadata?.creationTimestamp ?? 0).getTime();
  return candidates.sort((a, b) => Number(ready(b)) - Number(ready(a)) || created(b) - created(a))[0];
}

/**
 * The exit code in the Status the API server sends when the command ends: `Success` is 0; a
 * `NonZeroExitCode` failure carries the code as an `ExitCode` cause. Any other failure (the
 * container is gone, the runtime could not start the command) is an error, not an exit code.
 */
export function exitCodeOf(status: V1Status): number {
  if (status.status === 'Success') return 0;
  if (status.reason === 'NonZeroExitCode') {
    const code = Number(status.details?.causes?.find((c) => c.reason === 'ExitCode')?.message);
    if (Number.isInteger(code) && code > 0) return code;
  }
  throw new Error(`exec failed: ${status.message ?? status.reason ?? 'the API server gave no reason'}`);
}

/** What client-node's WebSocket needs to be: closable, and telling when it closes. */
interface ExecSocket {
  close(): void;
  /** Bytes sent but not yet written to the network (the `ws` package's). */
  readonly bufferedAmount?: number;
  /** Stop and go on reading from the network (the `ws` package's). */
  pause?(): void;
  resume?(): void;
  addEventListener(type: 'close' | 'message', listener: () => void): void;
}

/** How long the WebSocket upgrade may take; the command's own timeout starts once it is open. */
export const EXEC_CONNECT_TIMEOUT_MS = 10_000;

/**
 * Runs `command` in the target container and resolves with its exit code and output. On timeout
 * or abort the WebSocket is closed (the API server then ends the stream; like Docker, the
 * process inside may run on). An upgrade that does not complete in `connectTimeoutMs` is
 * the API server's failure (ETIMEDOUT), not the command's.
 */
export function runPodExec(
  exec: Pick<Exec, 'exec'>,
  target: PodExecTarget,
  command: string[],
  timeoutMs: number,
  signal: AbortSignal,
  connectTimeoutMs = EXEC_CONNECT_TIMEOUT_MS,
  /** Where stdout goes as it comes (a backup streams a whole archive); default: collected, bounded. */
  stdoutStream?: Writable,
  /** The command's stdin, streamed in (a restore's state); closed at its end (needs v5.channel.k8s.io). */
  stdinStream?: Readable,
): Promise<ExecResult> {
  const collected = new OutputCollector();
  const stdout = stdoutStream ?? collected;
  const stderr = new OutputCollector();
  return new Promise<ExecResult>((resolve, reject) => {
    let socket: ExecSocket | undefined;
    const stdin = stdinStream ? throttled(stdinStream, () => socket?.bufferedAmount ?? 0) : null;
    let settled = false;
    let commandTimer: NodeJS.Timeout | undefined;
    const settle = (finish: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(commandTimer);
      signal.removeEventListener('abort', onAbort);
      socket?.close();
      // A command that ended before reading all its input (a restore pod that failed early) leaves
      // the rest unsent: the gate stops waiting for the socket, and the source (a staged file) closes.
      stdin?.destroy();
      finish();
    };
    const connectTimer = setTimeout(
      () =>
        settle(() => {
          const error = new Error(`exec in pod ${target.pod}: no WebSocket upgrade within ${connectTimeoutMs} ms`);
          reject(Object.assign(error, { code: 'ETIMEDOUT' }));
        }),
      connectTimeoutMs,
    );
    const onAbort = () => settle(() => reject(signal.reason instanceof Error ? signal.reason : new Error('exec aborted')));
    signal.addEventListener('abort', onAbort, { once: true });
    // A stdin that fails (a staged file unreadable) would leave the command waiting for more.
    stdin?.on('error', (error) => settle(() => reject(error)));

    const onStatus = (status: V1Status) =>
      settle(() => {
        try {
          resolve({ exitCode: exitCodeOf(status), stdout: collected.text(), stderr: stderr.text() });
        } catch (error) {
          reject(error);
        }
      });
    exec
      .exec(target.namespace, target.pod, target.container, command, stdout, stderr, stdin, false, onStatus)
      .then((ws) => {
        socket = ws as unknown as ExecSocket;
        if (settled) {
          socket.close();
          return;
        }
        clearTimeout(connectTimer);
        if (stdoutStream) holdBack(socket, stdoutStream);
        commandTimer = setTimeout(() => settle(() => reject(new ExecTimeoutError(command, timeoutMs))), timeoutMs);
        // The status frame comes before the close; a close without one is a broken stream.
        socket.addEventListener('close', () =>
          settle(() => reject(new Error(`exec in pod ${target.pod}: the stream closed without an exit status`))),
        );
      })
      .catch((event: unknown) => settle(() => reject(connectError(event, target.pod))));
  });
}

/**
 * client-node writes each stdout frame to `stdout` without regard for its back-pressure, so a
 * pod sending faster than `stdout` takes it (a backup's tar of many tiny files to unpack, a slow
 * disk) would pile its whole output up in the controller's memory, until blytz serve ran out of
 * it for everyone. The socket is paused (the API server then holds the pod back) while `stdout`
 * is full, and read on once it drains or is gone.
 */
function holdBack(socket: ExecSocket, stdout: Writable): void {
  let paused = false;
  const goOn = () => {
    stdout.off('drain', goOn);
    stdout.off('close', goOn);
    paused = false;
    socket.resume?.();
  };
  // Registered after client-node's own listener: runs once the frame was written to `stdout`.
  socket.addEventListener('message', () => {
    if (paused || stdout.destroyed || !stdout.writableNeedDrain) return;
    paused = true;
    stdout.on('drain', goOn);
    stdout.on('close', goOn);
    socket.pause?.();
  });
}

/** Sent but not yet on the network: above this, stdin is read no further until the socket catches up. */
const STDIN_BUFFERED_BYTES = 8 * 1024 * 1024;
const STDIN_LOOK_MS = 10;

/**
 * client-node sends stdin as fast as it is read, with no regard for the socket: the whole of a
 * large state would end up in memory. This passes it on only while little is waiting to be sent.
 */
function throttled(stdin: Readable, buffered: () => number): Readable {
  const gate = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const go = () => {
        if (gate.destroyed) return; // the command is over: nothing waits for this chunk any more
        if (buffered() > STDIN_BUFFERED_BYTES) setTimeout(go, STDIN_LOOK_MS);
        else callback(null, chunk);
      };
      go();
    },
  });
  stdin.on('error', (error) => gate.destroy(error));
  gate.on('close', () => stdin.destroy());
  return stdin.pipe(gate);
}

/**
 * client-node rejects a failed connect with the WebSocket's error event, not an Error. A 404 on
 * the upgrade means the pod is gone. Other HTTP answers (the kubelet's 500 for a container that
 * stopped meanwhile, 403 without the pods/exec grant) carry no status code on the error, so they
 * do not count against the `kubernetes` breaker; a socket failure keeps its code in `cause`
 * (ECONNREFUSED: the API server is down, which does).
 */
function connectError(event: unknown, pod: string): Error {
  const cause = (event as { error?: unknown } | undefined)?.error ?? event;
  const message = (cause as { message?: unknown } | undefined)?.message;
  const text = typeof message === 'string' ? message : String(cause);
  if (/Unexpected server response: 404\b/.test(text)) return new ContainerNotRunningError(pod, 'the pod is gone');
  return new Error(`exec in pod ${pod}: ${text}`, { cause });
}
