import { Writable } from 'node:stream';
import type Docker from 'dockerode';
import type { ExecResult } from '../runtime.js';

/** The command ran longer than allowed. It is not the engine's fault, so it is no dependency failure. */
export class ExecTimeoutError extends Error {
  constructor(
    readonly command: string[],
    readonly timeoutMs: number,
  ) {
    super(`command ${JSON.stringify(command[0] ?? '')} did not finish within ${timeoutMs} ms`);
    this.name = 'ExecTimeoutError';
  }
}

/** Keeps at most `limit` bytes: a chatty command cannot fill the controller's memory. */
class Collector extends Writable {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    if (this.#size < this.limit) {
      const part = chunk.subarray(0, this.limit - this.#size);
      this.#chunks.push(part);
      this.#size += part.length;
    }
    callback();
  }
  text(): string {
    return Buffer.concat(this.#chunks).toString('utf8');
  }
}

const OUTPUT_LIMIT = 1024 * 1024;

/**
 * `docker exec` without a TTY: the engine multiplexes stdout and stderr on one stream, which
 * the modem splits; the exit code comes from inspecting the exec once the stream ends.
 * (The engine has no way to kill an exec: on timeout the stream is dropped and the process
 * inside may run on.)
 */
export async function runExec(
  docker: Docker,
  containerId: string,
  command: string[],
  timeoutMs: number,
  signal: AbortSignal,
): Promise<ExecResult> {
  const exec = await docker
    .getContainer(containerId)
    .exec({ Cmd: command, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, abortSignal: signal });
  const stream = await exec.start({ hijack: true, stdin: false, Detach: false, Tty: false });
  const stdout = new Collector(OUTPUT_LIMIT);
  const stderr = new Collector(OUTPUT_LIMIT);
  docker.modem.demuxStream(stream, stdout, stderr);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      finish();
      reject(new ExecTimeoutError(command, timeoutMs));
    }, timeoutMs);
    const onAbort = () => {
      finish();
      reject(signal.reason instanceof Error ? signal.reason : new Error('exec aborted'));
    };
    const onEnd = () => {
      finish();
      resolve();
    };
    const onError = (error: Error) => {
      finish();
      reject(error);
    };
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      stream.off('end', onEnd).off('close', onEnd).off('error', onError);
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('end', onEnd).on('close', onEnd).on('error', onError);
  });

  // The stream can end a moment before the engine records the exit code.
  for (let i = 0; ; i++) {
    const info = await exec.inspect();
    if (!info.Running && info.ExitCode !== null) return { exitCode: info.ExitCode, stdout: stdout.text(), stderr: stderr.text() };
    if (i >= 50 || signal.aborted) throw new Error(`exec in ${containerId.slice(0, 12)} ended its output but has no exit code`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
