// The dispatcher's rules, without processes: each condition the protocol table
// may name, denied and allowed, on the side that receives the message; and what
// happens to a channel once a frame is refused.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProtocolError } from '../src/shared/errors.js';
import { IpcDispatcher, type MessageHandlers } from '../src/shared/ipcDispatch.js';
import {
  FRAME_HEADER_BYTES,
  MESSAGE_SPECS,
  Msg,
  type ChannelConfig,
  type MessageName,
  type MessageSpec,
  type Side,
} from '../src/shared/ipcProtocol.js';

const NO_FLAGS: ChannelConfig = { httpShutdown: false, webSocket: false, dumps: false, allowModel: false };
const ALL_FLAGS: ChannelConfig = { httpShutdown: true, webSocket: true, dumps: true, allowModel: true };

function spec(name: MessageName): MessageSpec {
  return MESSAGE_SPECS.get(Msg[name]) as MessageSpec;
}

/** A frame the decoder accepts (payload of the smallest permitted size). */
function frame(name: MessageName, streamId = 1): Buffer {
  const s = spec(name);
  const bytes = Buffer.alloc(FRAME_HEADER_BYTES + s.minPayload, 0);
  bytes.writeUInt32BE(s.minPayload, 0);
  bytes[4] = s.type;
  bytes.writeUInt32BE(s.onStream ? streamId : 0, 5);
  return bytes;
}

/** A dispatcher reading frames from `sender` whose handlers note what reached them. */
function reader<S extends Side>(sender: S, config: ChannelConfig | null) {
  const handled: string[] = [];
  const names = [...MESSAGE_SPECS.values()].filter((s) => s.from === sender || s.from === 'either').map((s) => s.name);
  const handlers = Object.fromEntries(names.map((name) => [name, (id: number) => handled.push(`${name}@${id}`)]));
  const dispatcher = new IpcDispatcher(sender, handlers as unknown as MessageHandlers<S>, config);
  return { dispatcher, handled };
}

interface Setup {
  /** The worker's flags; on the worker, null means CONFIG has not arrived. */
  readonly config?: ChannelConfig | null;
  /** Connection messages that passed first: received from the sender, or sent by the reading side. */
  readonly before?: readonly MessageName[];
}

/**
 * Hands `name` from `sender` to a fresh dispatcher after `setup`: "handled"
 * when it reached its handler, else the violation's reason.
 */
function attempt(sender: Side, name: MessageName, setup: Setup = {}): string {
  const config = setup.config === undefined ? (sender === 'worker' ? NO_FLAGS : null) : setup.config;
  const { dispatcher, handled } = reader(sender, config);
  for (const earlier of setup.before ?? []) {
    const from = spec(earlier).from;
    if (from === sender) dispatcher.push(frame(earlier));
    else dispatcher.sent(Msg[earlier]);
  }
  const before = handled.length;
  try {
    dispatcher.push(frame(name));
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `a ProtocolError, not ${String(err)}`);
    assert.equal(handled.length, before, 'a refused frame reaches no handler');
    return err.message;
  }
  assert.deepEqual(handled.slice(before), [`${name}@${spec(name).onStream ? 1 : 0}`]);
  return 'handled';
}

const WORKER_WITH = (flags: Partial<ChannelConfig>): ChannelConfig => ({ ...NO_FLAGS, ...flags });

describe('the dispatcher enforces when each message is permitted', () => {
  test('once: READY, STARTUP_FAILED, CONFIG and DRAIN are refused the second time', () => {
    assert.equal(attempt('worker', 'READY'), 'handled');
    assert.equal(attempt('worker', 'READY', { before: ['READY'] }), 'READY sent twice');
    assert.equal(attempt('worker', 'STARTUP_FAILED'), 'handled');
    assert.equal(attempt('worker', 'STARTUP_FAILED', { before: ['STARTUP_FAILED'] }), 'STARTUP_FAILED sent twice');
    assert.equal(attempt('supervisor', 'CONFIG'), 'handled');
    assert.equal(attempt('supervisor', 'CONFIG', { before: ['CONFIG'] }), 'CONFIG sent twice');
    assert.equal(attempt('supervisor', 'DRAIN', { config: NO_FLAGS }), 'handled');
    assert.equal(attempt('supervisor', 'DRAIN', { config: NO_FLAGS, before: ['DRAIN'] }), 'DRAIN sent twice');
  });

  test('beforeReady: STARTUP_FAILED after READY is a violation, not a reason to stop', () => {
    assert.equal(attempt('worker', 'STARTUP_FAILED', { before: ['DRAIN'] }), 'handled');
    assert.equal(attempt('worker', 'STARTUP_FAILED', { before: ['READY'] }), 'STARTUP_FAILED after READY');
  });

  test('afterReady: every stream message, either way, is refused before READY and handled after it', () => {
    const streamMessages = [...MESSAGE_SPECS.values()].filter((s) => s.onStream);
    assert.ok(streamMessages.length >= 10);
    for (const { name, from } of streamMessages) {
      const senders: Side[] = from === 'either' ? ['worker', 'supervisor'] : [from];
      for (const sender of senders) {
        const n = name as MessageName;
        const what = `${name} from the ${sender}`;
        assert.equal(attempt(sender, n, { config: ALL_FLAGS }), `${name} before READY`, what);
        assert.equal(attempt(sender, n, { config: ALL_FLAGS, before: ['READY'] }), 'handled', what);
      }
    }
    assert.equal(attempt('worker', 'SHUTDOWN', { config: ALL_FLAGS }), 'SHUTDOWN before READY');
  });

  test('afterDrain: DRAINED only once the supervisor said DRAIN (before READY too; repeats are harmless)', () => {
    assert.equal(attempt('worker', 'DRAINED'), 'DRAINED before DRAIN');
    assert.equal(attempt('worker', 'DRAINED', { before: ['READY'] }), 'DRAINED before DRAIN');
    assert.equal(attempt('worker', 'DRAINED', { before: ['DRAIN'] }), 'handled');
    assert.equal(attempt('worker', 'DRAINED', { before: ['DRAIN', 'DRAINED'] }), 'handled');
  });

  test('configured: the worker takes nothing but CONFIG until CONFIG has arrived', () => {
    assert.equal(attempt('supervisor', 'DRAIN', { config: null }), 'DRAIN before CONFIG');
    assert.equal(attempt('supervisor', 'RESPONSE_HEAD', { config: null }), 'RESPONSE_HEAD before READY');
    const scanned = attempt('supervisor', 'REQUEST_SCANNED', { config: null, before: ['READY'] });
    assert.equal(scanned, 'REQUEST_SCANNED without --dump-dir');
    assert.equal(attempt('supervisor', 'CONFIG', { config: null }), 'handled');
  });

  test('httpShutdown: SHUTDOWN only with --http-shutdown', () => {
    const config = WORKER_WITH({ httpShutdown: true });
    assert.equal(attempt('worker', 'SHUTDOWN', { before: ['READY'] }), 'SHUTDOWN without --http-shutdown');
    assert.equal(attempt('worker', 'SHUTDOWN', { config, before: ['READY'] }), 'handled');
    assert.equal(attempt('worker', 'SHUTDOWN', { config, before: ['READY', 'SHUTDOWN'] }), 'handled');
  });

  test('webSocket: every WS_* message, either way, only with --websocket', () => {
    const wsMessages = [...MESSAGE_SPECS.values()].filter((s) => s.name.startsWith('WS_'));
    assert.equal(wsMessages.length, 6);
    for (const { name, from } of wsMessages) {
      for (const sender of from === 'either' ? (['worker', 'supervisor'] as const) : [from as Side]) {
        const n = name as MessageName;
        const without = WORKER_WITH({ httpShutdown: true, dumps: true });
        const what = `${name} from the ${sender}`;
        const denied = attempt(sender, n, { config: without, before: ['READY'] });
        assert.equal(denied, `${name} without --websocket`, what);
        const config = WORKER_WITH({ webSocket: true });
        assert.equal(attempt(sender, n, { config, before: ['READY'] }), 'handled', what);
      }
    }
  });

  test('dumps: REQUEST_SCANNED only with --dump-dir', () => {
    const without = WORKER_WITH({ httpShutdown: true, webSocket: true });
    const withDumps = WORKER_WITH({ dumps: true });
    const denied = attempt('supervisor', 'REQUEST_SCANNED', { config: without, before: ['READY'] });
    assert.equal(denied, 'REQUEST_SCANNED without --dump-dir');
    assert.equal(attempt('supervisor', 'REQUEST_SCANNED', { config: withDumps, before: ['READY'] }), 'handled');
  });

  test('allowModel: MODEL_REFUSED only with --allow-model', () => {
    const without = WORKER_WITH({ httpShutdown: true, webSocket: true, dumps: true });
    const denied = attempt('worker', 'MODEL_REFUSED', { config: without, before: ['READY'] });
    assert.equal(denied, 'MODEL_REFUSED without --allow-model');
    const config = WORKER_WITH({ allowModel: true });
    assert.equal(attempt('worker', 'MODEL_REFUSED', { config, before: ['READY'] }), 'handled');
    assert.equal(attempt('worker', 'MODEL_REFUSED', { config }), 'MODEL_REFUSED before READY');
  });

  test('on the worker the flags count from CONFIG on: configure() enables what the configuration enables', () => {
    const { dispatcher, handled } = reader('supervisor', null);
    dispatcher.push(frame('CONFIG'));
    dispatcher.configure(WORKER_WITH({ dumps: true }));
    dispatcher.sent(Msg.READY);
    dispatcher.push(frame('REQUEST_SCANNED'));
    assert.deepEqual(handled, ['CONFIG@0', 'REQUEST_SCANNED@1']);
  });
});

describe('a refused frame ends the channel', () => {
  test("the decoder's refusals (type, side, size, stream) come through as they are", () => {
    const header = (type: number, length: number, streamId: number): Buffer => {
      const b = Buffer.alloc(FRAME_HEADER_BYTES);
      b.writeUInt32BE(length, 0);
      b[4] = type;
      b.writeUInt32BE(streamId, 5);
      return b;
    };
    const refused = (sender: Side, bytes: Buffer, message: string): void => {
      const { dispatcher, handled } = reader(sender, ALL_FLAGS);
      assert.throws(
        () => dispatcher.push(bytes),
        (err) => err instanceof ProtocolError && err.message === message,
      );
      assert.deepEqual(handled, []);
    };
    refused('worker', header(0x55, 0, 0), 'unknown message type 0x55');
    refused('worker', header(Msg.CONFIG, 2, 0), 'CONFIG may not be sent by the worker');
    refused('supervisor', header(Msg.OPEN, 2, 1), 'OPEN may not be sent by the supervisor');
    refused('worker', header(Msg.READY, 1, 0), 'READY payload of 1 bytes is outside 0..0');
    refused('worker', header(Msg.READY, 0, 3), 'READY on stream 3 is not allowed');
  });

  test('after a refusal nothing more is handled, even frames that would be permitted', () => {
    const { dispatcher, handled } = reader('worker', NO_FLAGS);
    dispatcher.push(frame('READY'));
    const refused = Buffer.concat([frame('SHUTDOWN'), frame('OPEN')]);
    assert.throws(() => dispatcher.push(refused), { message: 'SHUTDOWN without --http-shutdown' });
    dispatcher.push(frame('OPEN', 2));
    assert.deepEqual(handled, ['READY@0']);
    assert.equal(dispatcher.bufferedBytes, 0);
  });

  test('a handler that throws ends the channel too', () => {
    const handled: string[] = [];
    const handlers = Object.fromEntries(
      [...MESSAGE_SPECS.values()]
        .filter((s) => s.from !== 'supervisor')
        .map((s) => [
          s.name,
          () => {
            handled.push(s.name);
            throw new ProtocolError(`${s.name} payload invalid`);
          },
        ]),
    ) as unknown as MessageHandlers<'worker'>;
    const dispatcher = new IpcDispatcher('worker', handlers, NO_FLAGS);
    assert.throws(() => dispatcher.push(frame('STARTUP_FAILED')), { message: 'STARTUP_FAILED payload invalid' });
    dispatcher.push(frame('READY'));
    assert.deepEqual(handled, ['STARTUP_FAILED']);
  });
});
