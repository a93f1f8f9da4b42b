import type Docker from 'dockerode';
import { httpStatusOf } from '../../resilience/transient.js';
import { ContainerNotRunningError, ExecTimeoutError, OutputCollector } from '../exec-output.js';
import { execDemuxer } from './exec-demux.js';
import type { ExecResult } from '../runtime.js';

/**
 * `docker exec` without a TTY: the engine multiplexes stdout and stderr on one stream, which
 * `execDemuxer` splits; the exit code comes from inspecting the exec once the stream ends.
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
  // 409 "is not running" / "is paused" / "is restarting" (also when it stopped between creating
  // the exec and starting it), 404: gone. Both answer the caller.
  const notRunning = (error: unknown): never => {
    const status = httpStatusOf(error);
    if (status === 404 || status === 409) throw new ContainerNotRunningError(containerId.slice(0, 12), (error as Error).message);
    throw error;
  };
  const exec = await docker
    .getContainer(containerId)
    .exec({ Cmd: command, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, abortSignal: signal })
    .catch(notRunning);
  const stream = await exec.start({ hijack: true, stdin: false, Detach: false, Tty: false }).catch(notRunning);
  const stdout = new OutputCollector();
  const stderr = new OutputCollector();
  stream.on('data', execDemuxer(stdout, stderr));

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
