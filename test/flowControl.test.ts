// The credit sender's rules, exercised directly (no processes, no sockets):
// both processes send every body and every WebSocket message through it.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProtocolError } from '../src/shared/errors.js';
import { CreditSender, MAX_WINDOW } from '../src/shared/flowControl.js';
import {
  INITIAL_STREAM_WINDOW,
  MAX_DATA_PAYLOAD,
  MESSAGE_CREDIT,
  Msg,
  type FrameWriter,
  type MsgType,
} from '../src/shared/ipcProtocol.js';

interface Sent {
  readonly type: MsgType;
  readonly payload: Buffer | undefined;
}

/** A sender on a writer that records each frame's payload as passed (no copy), and a source that logs pause/resume. */
function setUp(): { sender: CreditSender; sent: Sent[]; events: string[]; bytes: () => number } {
  const sent: Sent[] = [];
  const events: string[] = [];
  const writer = { send: (type: MsgType, _id: number, payload?: Buffer) => sent.push({ type, payload }) };
  const source = { pause: () => events.push('pause'), resume: () => events.push('resume') };
  const sender = new CreditSender(writer as unknown as FrameWriter, 7, source);
  const bytes = (): number => sent.reduce((n, f) => n + (f.payload?.length ?? 0), 0);
  return { sender, sent, events, bytes };
}

describe('CreditSender', () => {
  test('sends exactly the window, in parts of at most MAX_DATA_PAYLOAD that share the caller’s memory', () => {
    const { sender, sent, events, bytes } = setUp();
    const chunk = Buffer.alloc(INITIAL_STREAM_WINDOW - 10, 1);
    sender.send(chunk, Msg.RESPONSE_DATA);
    assert.deepEqual(events, [], 'not paused while credit lasts');
    const next = Buffer.alloc(30, 2);
    sender.send(next, Msg.RESPONSE_DATA);
    assert.equal(bytes(), INITIAL_STREAM_WINDOW);
    assert.ok(sent.every((f) => f.type === Msg.RESPONSE_DATA && (f.payload?.length ?? 0) <= MAX_DATA_PAYLOAD));
    assert.ok(
      sent.every((f) => f.payload?.buffer === chunk.buffer || f.payload?.buffer === next.buffer),
      'no copies',
    );
    assert.equal(sender.heldBytes, 20);
    assert.deepEqual(events, ['pause']);
  });

  test('pauses at zero credit, holds later data in order, and resumes once a grant has sent all of it', () => {
    const { sender, sent, events, bytes } = setUp();
    sender.send(Buffer.alloc(INITIAL_STREAM_WINDOW, 0), Msg.REQUEST_DATA);
    assert.deepEqual(events, [], 'a chunk that uses the credit exactly holds nothing back');
    sender.send(Buffer.from('ab'), Msg.REQUEST_DATA);
    sender.send(Buffer.from('cde'), Msg.REQUEST_DATA);
    assert.equal(sender.heldBytes, 5);
    assert.deepEqual(events, ['pause', 'pause']);
    const before = sent.length;
    sender.grant(3);
    assert.deepEqual(
      sent.slice(before).map((f) => f.payload?.toString()),
      ['ab', 'c'],
    );
    assert.equal(sender.heldBytes, 2);
    assert.deepEqual(events, ['pause', 'pause'], 'still short: not resumed');
    sender.grant(100);
    assert.equal(sent.at(-1)?.payload?.toString(), 'de');
    assert.equal(sender.heldBytes, 0);
    assert.deepEqual(events, ['pause', 'pause', 'resume']);
    assert.equal(bytes(), INITIAL_STREAM_WINDOW + 5);
    sender.send(Buffer.alloc(97), Msg.REQUEST_DATA); // the rest of the grant
    sender.grant(1); // nothing held: no resume for a source that was not paused
    assert.deepEqual(events, ['pause', 'pause', 'resume']);
  });

  test('a message ends with its END frame, which carries its last bytes and costs MESSAGE_CREDIT more', () => {
    const { sender, sent, events } = setUp();
    sender.send(Buffer.alloc(INITIAL_STREAM_WINDOW - MESSAGE_CREDIT - 1), Msg.WS_BINARY_PART, Msg.WS_BINARY_END);
    assert.deepEqual(
      sent.slice(-2).map((f) => [f.type, f.payload?.length]),
      [
        [Msg.WS_BINARY_PART, MAX_DATA_PAYLOAD],
        [Msg.WS_BINARY_END, MAX_DATA_PAYLOAD - MESSAGE_CREDIT - 1],
      ],
    );
    const frames = sent.length;
    sender.send(Buffer.alloc(0), Msg.WS_TEXT_PART, Msg.WS_TEXT_END);
    sender.send(Buffer.alloc(3), Msg.WS_TEXT_PART, Msg.WS_TEXT_END);
    assert.equal(sent.length, frames, 'one credit left: even an empty message waits');
    assert.deepEqual(events, ['pause', 'pause']);
    sender.grant(MESSAGE_CREDIT - 1);
    assert.deepEqual(
      sent.slice(frames).map((f) => [f.type, f.payload?.length]),
      [[Msg.WS_TEXT_END, 0]],
    );
    sender.grant(2); // covers two bytes, not the END: the last byte waits for it
    sender.grant(MESSAGE_CREDIT);
    assert.equal(sent.length, frames + 2, 'the END needs its byte and MESSAGE_CREDIT');
    sender.grant(1);
    assert.deepEqual(
      sent.slice(frames + 1).map((f) => [f.type, f.payload?.length]),
      [
        [Msg.WS_TEXT_PART, 2],
        [Msg.WS_TEXT_END, 1],
      ],
    );
    assert.deepEqual(events, ['pause', 'pause', 'resume']);
  });

  test('a window holds INITIAL_STREAM_WINDOW / MESSAGE_CREDIT empty messages; the rest wait for credit', () => {
    const { sender, sent, events } = setUp();
    const perWindow = INITIAL_STREAM_WINDOW / MESSAGE_CREDIT;
    for (let i = 0; i < 3 * perWindow; i++) sender.send(Buffer.alloc(0), Msg.WS_TEXT_PART, Msg.WS_TEXT_END);
    assert.equal(sent.length, perWindow);
    assert.equal(events[0], 'pause');
    sender.grant(10 * MESSAGE_CREDIT);
    assert.equal(sent.length, perWindow + 10);
    sender.grant(INITIAL_STREAM_WINDOW * 2);
    assert.equal(sent.length, 3 * perWindow);
    assert.ok(sent.every((f) => f.type === Msg.WS_TEXT_END && f.payload?.length === 0));
    assert.equal(events.at(-1), 'resume');
  });

  test('the final frame waits behind held data, goes out once with its payload, and nothing follows it', () => {
    const { sender, sent, events } = setUp();
    sender.send(Buffer.alloc(INITIAL_STREAM_WINDOW + 4), Msg.RESPONSE_DATA);
    let endCalls = 0;
    sender.end(Msg.WS_CLOSE, () => endCalls++, Buffer.from([3, 232]));
    sender.end(Msg.RESPONSE_END, () => endCalls++);
    assert.ok(sender.ending);
    assert.ok(!sender.ended);
    assert.notEqual(sent.at(-1)?.type, Msg.WS_CLOSE);
    sender.send(Buffer.from('late'), Msg.RESPONSE_DATA);
    assert.equal(sender.heldBytes, 4, 'data after end() is ignored');
    sender.grant(4);
    assert.deepEqual(
      sent.slice(-2).map((f) => [f.type, f.payload?.length]),
      [
        [Msg.RESPONSE_DATA, 4],
        [Msg.WS_CLOSE, 2],
      ],
    );
    assert.equal(endCalls, 1);
    assert.ok(sender.ended);
    assert.deepEqual(events, ['pause'], 'an ended stream is not resumed');
  });

  test('grants that would take the credit past MAX_WINDOW are a protocol violation', () => {
    const { sender } = setUp();
    sender.grant(MAX_WINDOW - INITIAL_STREAM_WINDOW); // exactly the maximum
    assert.throws(() => sender.grant(1), ProtocolError);
    const other = setUp().sender;
    assert.throws(() => other.grant(0xffffffff), /window overflow on stream 7/);
  });

  test('discard() drops what is held, sends a waiting final frame, resumes a paused source', () => {
    const { sender, sent, events } = setUp();
    sender.send(Buffer.alloc(INITIAL_STREAM_WINDOW + 9), Msg.RESPONSE_DATA);
    sender.end(Msg.RESPONSE_END);
    sender.discard();
    assert.equal(sender.heldBytes, 0);
    assert.equal(sent.at(-1)?.type, Msg.RESPONSE_END);
    assert.deepEqual(events, ['pause', 'resume']);
    const count = sent.length;
    sender.grant(100);
    assert.equal(sent.length, count, 'nothing after the final frame');
    // A source that was never paused is not resumed (ws throws on resume() while a handshake is failing).
    const idle = setUp();
    idle.sender.discard();
    assert.deepEqual(idle.events, []);
  });
});
