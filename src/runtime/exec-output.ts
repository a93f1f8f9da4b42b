import { Writable } from 'node:stream';

/**
 * What both runtimes' `exec` share: the timeout error and a bounded collector for the output.
 */

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
export class OutputCollector extends Writable {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  constructor(private readonly limit = EXEC_OUTPUT_LIMIT) {
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

export const EXEC_OUTPUT_LIMIT = 1024 * 1024;

/**
 * There is nothing to run the command in: the container (on Kubernetes, its pod) is stopped,
 * still starting or gone. An answer about the customer, not a dependency failure; callers treat
 * it like finding no running container in the first place.
 */
export class ContainerNotRunningError extends Error {
  constructor(
    readonly id: string,
    detail: string,
  ) {
    super(`cannot exec in ${id}: ${detail}`);
    this.name = 'ContainerNotRunningError';
  }
}
