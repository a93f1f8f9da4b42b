import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { execDemuxer } from '../../src/runtime/docker/exec-demux.js';
import { OutputCollector } from '../../src/runtime/exec-output.js';

/** One frame as the engine writes it: type, three zero bytes, big-endian length, payload. */
function frame(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

async function demux(chunks: Buffer[]): Promise<{ stdout: string; stderr: string }> {
  const stdout = new OutputCollector();
  const stderr = new OutputCollector();
  const feed = execDemuxer(stdout, stderr);
  for (const chunk of chunks) feed(chunk);
  // The collectors take writes asynchronously only when corked; end them to read everything.
  await Promise.all([new Promise((r) => stdout.end(r)), new Promise((r) => stderr.end(r))]);
  return { stdout: stdout.text(), stderr: stderr.text() };
}

describe('the Docker exec demultiplexer', () => {
  it('splits stdout and stderr however the stream is cut into reads', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ type: fc.constantFrom(1, 2), text: fc.string({ maxLength: 40 }) }), { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        async (frames, cuts) => {
          const whole = Buffer.concat(frames.map((f) => frame(f.type, Buffer.from(f.text))));
          const points = [...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((a, b) => a - b);
          const chunks: Buffer[] = [];
          let from = 0;
          for (const p of [...points, whole.length]) {
            chunks.push(whole.subarray(from, p));
            from = p;
          }
          const out = await demux(chunks);
          expect(out.stdout).toBe(frames.filter((f) => f.type === 1).map((f) => f.text).join(''));
          expect(out.stderr).toBe(frames.filter((f) => f.type === 2).map((f) => f.text).join(''));
        },
      ),
    );
  });

  it('takes a million one-byte frames in one read (docker-modem overflowed its stack on a few thousand)', async () => {
    const one = frame(1, Buffer.from('x'));
    const many = Buffer.alloc(one.length * 1_000_000);
    for (let i = 0; i < 1_000_000; i++) one.copy(many, i * one.length);
    const out = await demux([many]);
    expect(out.stdout.length).toBe(1_000_000);
  });

  it('holds nothing for a frame that claims gigabytes: its payload is passed on as it comes', async () => {
    const header = frame(2, Buffer.alloc(0));
    header.writeUInt32BE(0xffffffff, 4);
    const out = await demux([header, Buffer.from('partial output'), Buffer.from(' and more')]);
    expect(out.stderr).toBe('partial output and more');
    expect(out.stdout).toBe('');
  });

  it('drops frames of any other stream type', async () => {
    const out = await demux([Buffer.concat([frame(0, Buffer.from('stdin?')), frame(3, Buffer.from('?')), frame(1, Buffer.from('ok'))])]);
    expect(out).toEqual({ stdout: 'ok', stderr: '' });
  });
});
