import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, ROOT } from './blytz-serve.js';
import { waitFor } from './wait-for.js';

/**
 * The S3-protocol server the backup tests use: s3rver (started by `scripts/services.sh s3` on
 * 127.0.0.1:4568, `BLYTZ_TEST_S3_ENDPOINT` overrides), and private ones a test can stop and
 * start (a store that is down). Its fixed key pair is S3RVER/S3RVER.
 */

export const S3_ENDPOINT = process.env['BLYTZ_TEST_S3_ENDPOINT'] ?? 'http://127.0.0.1:4568';
export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export function s3Client(endpoint = S3_ENDPOINT): S3Client {
  return new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
}

/** A new bucket of the test's own on the server. */
export async function createBucket(endpoint = S3_ENDPOINT): Promise<string> {
  const bucket = `blytz-test-${randomBytes(5).toString('hex')}`;
  const client = s3Client(endpoint);
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
  return bucket;
}

export interface PrivateS3 {
  endpoint: string;
  port: number;
  /** Kills the server (the store is down); its folder is kept. */
  kill(): Promise<void>;
  /** Starts it again on the same port and folder. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** An s3rver process of the test's own, on a free port. */
export async function startPrivateS3(): Promise<PrivateS3> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'blytz-s3-'));
  const endpoint = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const answers = async () => {
    try {
      await fetch(`${endpoint}/`);
      return true;
    } catch {
      return false;
    }
  };
  const start = async () => {
    child = spawn(
      process.execPath,
      [join(ROOT, 'node_modules/s3rver/bin/s3rver.js'), '-a', '127.0.0.1', '-p', String(port), '-d', dir, '--silent'],
      {
        stdio: 'ignore',
      },
    );
    await waitFor(answers, 20_000);
  };
  const kill = async () => {
    const running = child;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    endpoint,
    port,
    kill,
    start,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
