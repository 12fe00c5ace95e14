// The IPC framing and flow control, exercised directly: these are the pieces a
// hostile worker talks to first.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProtocolError } from '../src/shared/errors.js';
import { CreditReceiver, CreditSender } from '../src/shared/flowControl.js';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameWriter,
  INITIAL_STREAM_WINDOW,
  MAX_DATA_PAYLOAD,
  MESSAGE_CREDIT,
  Msg,
  decodeHead,
  decodeUsage,
  encodeHead,
  encodeUsage,
  type MsgType,
} from '../src/shared/ipcProtocol.js';
import { MessageReceiver, decodeClose, sendClose, sendMessage } from '../src/shared/wsRelay.js';

interface Frame {
  type: MsgType;
  streamId: number;
  payload: Buffer;
}

/** A FrameWriter whose sink collects bytes synchronously. */
function collectingWriter(): { writer: FrameWriter; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const sink = { destroyed: false, cork() {}, uncork() {}, write: (c: Buffer) => chunks.push(Buffer.from(c)) > 0 };
  return { writer: new FrameWriter(sink), bytes: () => Buffer.concat(chunks) };
}

function decodeAll(from: 'worker' | 'supervisor', bytes: Buffer, pieces: number[] = [bytes.length]): Frame[] {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder(from, (type, streamId, payload) =>
    frames.push({ type, streamId, payload: Buffer.from(payload) }),
  );
  let offset = 0;
  for (const size of pieces) {
    decoder.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  if (offset < bytes.length) decoder.push(bytes.subarray(offset));
  return frames;
}

function header(length: number, type: number, streamId: number): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt32BE(length, 0);
  b[4] = type;
  b.writeUInt32BE(streamId, 5);
  return b;
}

describe('frames', () => {
  test('round-trip, whole and split at every byte boundary', () => {
    const { writer, bytes } = collectingWriter();
    const big = Buffer.alloc(MAX_DATA_PAYLOAD, 7);
    writer.send(Msg.OPEN, 1, encodeHead(['Content-Type', 'application/json', 'X-A', 'é']));
    writer.send(Msg.REQUEST_DATA, 1, Buffer.from('hello'));
    writer.send(Msg.REQUEST_DATA, 1, big);
    writer.send(Msg.REQUEST_END, 1);
    writer.sendWindow(3, 1234);
    const all = bytes();
    const expected = decodeAll('worker', all);
    assert.equal(expected.length, 5);
    assert.deepEqual(decodeHead(expected[0]!.payload, false).headers, ['Content-Type', 'application/json', 'X-A', 'é']);
    assert.equal(expected[2]!.payload.length, MAX_DATA_PAYLOAD);
    assert.equal(expected[4]!.payload.readUInt32BE(0), 1234);
    for (const cut of [1, 5, 9, 10, 100, all.length - 1]) {
      assert.deepEqual(decodeAll('worker', all, [cut]), expected, `split at ${cut}`);
    }
    assert.deepEqual(decodeAll('worker', all, new Array<number>(all.length).fill(1)), expected, 'byte by byte');
  });

  test('piece types: a frame that straddles chunks is handed on in pieces, nothing else changes', () => {
    const { writer, bytes } = collectingWriter();
    const big = Buffer.alloc(MAX_DATA_PAYLOAD);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    writer.send(Msg.RESPONSE_HEAD, 1, encodeHead(['a', 'b'], 200));
    writer.send(Msg.RESPONSE_DATA, 1, big);
    writer.send(Msg.RESPONSE_DATA, 2, Buffer.from('x'));
    writer.send(Msg.RESPONSE_END, 1);
    const all = bytes();
    for (const cuts of [[all.length], [20], [20, 30_000], [all.length - 3], new Array<number>(all.length).fill(1)]) {
      const frames: Frame[] = [];
      const decoder = new FrameDecoder(
        'supervisor',
        (type, streamId, payload) => frames.push({ type, streamId, payload: Buffer.from(payload) }),
        new Set([Msg.RESPONSE_DATA]),
      );
      let offset = 0;
      for (const size of cuts) {
        decoder.push(all.subarray(offset, offset + size));
        offset += size;
      }
      if (offset < all.length) decoder.push(all.subarray(offset));
      const data1 = frames.filter((f) => f.type === Msg.RESPONSE_DATA && f.streamId === 1);
      assert.ok(data1.every((f) => f.payload.length > 0));
      assert.deepEqual(Buffer.concat(data1.map((f) => f.payload)), big, `cuts ${cuts.length}`);
      // Order is kept: head, the pieces, the other stream's data, end.
      assert.deepEqual(
        frames.map((f) => f.type).filter((t, i, a) => t !== Msg.RESPONSE_DATA || a[i - 1] !== Msg.RESPONSE_DATA),
        [Msg.RESPONSE_HEAD, Msg.RESPONSE_DATA, Msg.RESPONSE_END],
      );
      assert.equal(frames.at(-2)?.streamId, 2);
    }
  });

  const refused: Array<[string, 'worker' | 'supervisor', Buffer]> = [
    ['unknown type', 'worker', header(0, 0x55, 1)],
    ['supervisor type sent by the worker', 'worker', header(4, Msg.RESPONSE_HEAD, 1)],
    ['oversize length (before any payload arrives)', 'worker', header(0x7fffffff, Msg.REQUEST_DATA, 1)],
    ['empty DATA', 'worker', header(0, Msg.REQUEST_DATA, 1)],
    ['stream message on stream 0', 'worker', header(0, Msg.REQUEST_END, 0)],
    ['connection message on a stream', 'worker', header(0, Msg.READY, 3)],
    ['WINDOW with a short payload', 'supervisor', Buffer.concat([header(2, Msg.WINDOW, 1), Buffer.alloc(2)])],
  ];
  for (const [name, from, bytes] of refused) {
    test(`refuses ${name}`, () => {
      assert.throws(() => decodeAll(from, bytes), ProtocolError);
    });
  }

  test('a refused frame stops the decoder for good', () => {
    let seen = 0;
    const decoder = new FrameDecoder('worker', () => seen++);
    assert.throws(() => decoder.push(header(0, 0x55, 1)), ProtocolError);
    decoder.push(header(0, Msg.READY, 0));
    assert.equal(seen, 0);
  });

  test('truncated or padded header lists are refused', () => {
    const head = encodeHead(['a', 'b'], 200);
    assert.deepEqual(decodeHead(head, true), { status: 200, headers: ['a', 'b'], withheldValues: [] });
    assert.throws(() => decodeHead(head.subarray(0, head.length - 1), true), ProtocolError);
    assert.throws(() => decodeHead(Buffer.concat([head, Buffer.from([0])]), true), ProtocolError);
  });

  test('a withheld field is not decoded: its value is "" in the list, and its bytes are left where they are', () => {
    const payload = encodeHead(['Host', 'h', 'Authorization', 'Bearer one', 'x-a', 'b', 'AUTHORIZATION', 'two']);
    const { headers, withheldValues } = decodeHead(payload, false, 'authorization');
    assert.deepEqual(headers, ['Host', 'h', 'Authorization', '', 'x-a', 'b', 'AUTHORIZATION', '']);
    assert.deepEqual(
      withheldValues.map((v) => v.toString('latin1')),
      ['Bearer one', 'two'],
    );
    assert.ok(
      withheldValues.every((v) => v.buffer === payload.buffer),
      'subarrays of the payload, not copies',
    );
    for (const value of withheldValues) value.fill(0);
    assert.ok(!payload.includes('Bearer one'), 'zeroing them wipes the payload');
  });

  test('usage fields round-trip, strings cut to 256 characters; malformed ones are refused', () => {
    const full = {
      model: 'gpt-5-codex',
      responseId: 'resp_\u00e9\u{1f600}',
      inputTokens: 2 ** 53 - 1,
      cachedInputTokens: 0,
      outputTokens: 7,
      reasoningTokens: 3,
      totalTokens: 12,
    };
    assert.deepEqual(decodeUsage(encodeUsage(full)), full);
    assert.deepEqual(decodeUsage(encodeUsage({ model: null, responseId: null })), { model: null, responseId: null });
    const long = decodeUsage(encodeUsage({ model: 'm'.repeat(300), responseId: 'r' }));
    assert.equal(long.model, 'm'.repeat(256));
    const encoded = encodeUsage(full);
    assert.throws(() => decodeUsage(encoded.subarray(0, encoded.length - 1)), ProtocolError);
    assert.throws(() => decodeUsage(Buffer.concat([encoded, Buffer.from([0])])), ProtocolError);
    assert.throws(() => decodeUsage(Buffer.from([2, 0xff, 0xff, 0xff, 0xff])), ProtocolError);
    for (const bad of [-1, 1.5, 2 ** 53, Number.NaN]) {
      const copy = Buffer.from(encoded);
      copy.writeDoubleBE(bad, encoded.length - 8);
      assert.throws(() => decodeUsage(copy), ProtocolError, `count ${bad}`);
    }
  });
});

describe('flow control', () => {
  test('a sender stays within credit, pauses its source and resumes on grant', () => {
    const { writer, bytes } = collectingWriter();
    const source = {
      paused: 0,
      resumed: 0,
      pause() {
        this.paused++;
      },
      resume() {
        this.resumed++;
      },
    };
    const sender = new CreditSender(writer, 1, source);
    sender.send(Buffer.alloc(INITIAL_STREAM_WINDOW + 1000, 1), Msg.REQUEST_DATA);
    let frames = decodeAll('worker', bytes());
    assert.equal(
      frames.reduce((n, f) => n + f.payload.length, 0),
      INITIAL_STREAM_WINDOW,
    );
    assert.ok(frames.every((f) => f.payload.length <= MAX_DATA_PAYLOAD));
    assert.equal(source.paused, 1);
    assert.equal(sender.heldBytes, 1000);
    let ended = false;
    sender.end(Msg.REQUEST_END, () => (ended = true));
    assert.equal(ended, false, 'END waits for held bytes');
    sender.grant(600);
    assert.equal(sender.heldBytes, 400);
    sender.grant(400);
    frames = decodeAll('worker', bytes());
    assert.equal(frames.at(-1)!.type, Msg.REQUEST_END);
    assert.equal(ended, true);
    assert.equal(source.resumed, 0, 'an ended stream is not resumed');
  });

  test('a receiver refuses data beyond the window and returns credit in batches', () => {
    const { writer, bytes } = collectingWriter();
    const receiver = new CreditReceiver(writer, 9);
    receiver.received(INITIAL_STREAM_WINDOW);
    assert.throws(() => receiver.received(1), ProtocolError);
    receiver.consumed(1000);
    assert.equal(bytes().length, 0, 'below the batch size nothing is sent');
    receiver.consumed(INITIAL_STREAM_WINDOW / 4);
    const [frame] = decodeAll('supervisor', bytes());
    assert.equal(frame!.type, Msg.WINDOW);
    assert.equal(frame!.payload.readUInt32BE(0), 1000 + INITIAL_STREAM_WINDOW / 4);
    receiver.received(1000 + INITIAL_STREAM_WINDOW / 4); // credit returned: room again
  });
});

describe('WebSocket messages over the channel (wsRelay)', () => {
  const pausable = () => {
    const events: string[] = [];
    return { events, source: { pause: () => events.push('pause'), resume: () => events.push('resume') } };
  };

  test('a message goes out as parts of at most MAX_DATA_PAYLOAD and one END, byte-exact, kind kept', () => {
    const { writer, bytes } = collectingWriter();
    const { source } = pausable();
    const sender = new CreditSender(writer, 3, source);
    const message = Buffer.alloc(200 * 1024);
    for (let i = 0; i < message.length; i++) message[i] = i % 251;
    sendMessage(sender, message, true);
    sendMessage(sender, Buffer.alloc(0), false);
    const frames = decodeAll('worker', bytes());
    assert.deepEqual(
      frames.map((f) => f.type),
      [Msg.WS_BINARY_PART, Msg.WS_BINARY_PART, Msg.WS_BINARY_PART, Msg.WS_BINARY_END, Msg.WS_TEXT_END],
    );
    assert.ok(frames.every((f) => f.streamId === 3 && f.payload.length <= MAX_DATA_PAYLOAD));
    assert.ok(Buffer.concat(frames.slice(0, 4).map((f) => f.payload)).equals(message));
    assert.equal(frames[4]?.payload.length, 0, 'an empty message is one empty END');
  });

  test('beyond the credit window the source is paused; later messages and the close wait in order', () => {
    const { writer, bytes } = collectingWriter();
    const { events, source } = pausable();
    const sender = new CreditSender(writer, 1, source);
    sendMessage(sender, Buffer.alloc(INITIAL_STREAM_WINDOW + 10, 0x61), false);
    sendMessage(sender, Buffer.from('next'), false);
    let closeSent = false;
    sendClose(sender, 4000, Buffer.from('bye'), () => (closeSent = true));
    let frames = decodeAll('worker', bytes());
    const sent = frames.reduce((n, f) => n + f.payload.length, 0);
    assert.equal(sent, INITIAL_STREAM_WINDOW, 'exactly one window went out');
    assert.ok(frames.every((f) => f.type === Msg.WS_TEXT_PART));
    assert.deepEqual(events, ['pause', 'pause']);
    assert.equal(closeSent, false);
    sender.grant(10 + 4 + 2 * MESSAGE_CREDIT);
    frames = decodeAll('worker', bytes());
    const tail = frames.slice(-3);
    assert.deepEqual(
      tail.map((f) => [f.type, f.payload.length]),
      [
        [Msg.WS_TEXT_END, 10],
        [Msg.WS_TEXT_END, 4],
        [Msg.WS_CLOSE, 5],
      ],
    );
    assert.deepEqual(decodeClose(tail[2]?.payload as Buffer), { code: 4000, reason: Buffer.from('bye') });
    assert.equal(closeSent, true);
    assert.ok(sender.ended);
    sendMessage(sender, Buffer.from('after close'), false);
    assert.equal(decodeAll('worker', bytes()).length, frames.length, 'nothing is sent after WS_CLOSE');
  });

  test('discard(): queued messages are dropped, a waiting close goes out, the source reads again, later messages are dropped', () => {
    const { writer, bytes } = collectingWriter();
    const { events, source } = pausable();
    const sender = new CreditSender(writer, 1, source);
    sendMessage(sender, Buffer.alloc(INITIAL_STREAM_WINDOW + 1), true);
    let closed = false;
    sendClose(sender, 1001, Buffer.from('going'), () => (closed = true));
    const before = decodeAll('worker', bytes()).length;
    sender.discard();
    sendMessage(sender, Buffer.from('late'), false);
    sender.grant(100);
    const after = decodeAll('worker', bytes()).slice(before);
    assert.deepEqual(
      after.map((f) => f.type),
      [Msg.WS_CLOSE],
    );
    assert.equal(closed, true);
    assert.deepEqual(events, ['pause', 'resume']);
    // A source that was never paused is not resumed (ws throws on resume() while a handshake is failing).
    const idle = pausable();
    new CreditSender(writer, 2, idle.source).discard();
    assert.deepEqual(idle.events, []);
  });

  test('the receiver passes parts on as fragments and returns credit once the socket took them', () => {
    const { writer, bytes } = collectingWriter();
    const fragments: Array<[number, boolean, boolean]> = [];
    const pending: Array<() => void> = [];
    const receiver = new MessageReceiver(writer, 5, (data, binary, fin, written) => {
      fragments.push([data.length, binary, fin]);
      pending.push(written);
    });
    receiver.receive(Msg.WS_BINARY_PART, Buffer.alloc(MAX_DATA_PAYLOAD));
    receiver.receive(Msg.WS_BINARY_END, Buffer.alloc(1));
    receiver.receive(Msg.WS_TEXT_END, Buffer.alloc(0));
    assert.deepEqual(fragments, [
      [MAX_DATA_PAYLOAD, true, false],
      [1, true, true],
      [0, false, true],
    ]);
    assert.equal(bytes().length, 0, 'no credit before the socket took the bytes');
    for (const written of pending) written();
    const windows = decodeAll('supervisor', bytes());
    assert.deepEqual(
      windows.map((f) => [f.type, f.payload.readUInt32BE(0)]),
      [[Msg.WINDOW, MAX_DATA_PAYLOAD]],
    );
  });

  test('a message that changes kind before its END, grows beyond the limit, or data beyond credit, is a protocol violation', () => {
    const { writer } = collectingWriter();
    const receiver = new MessageReceiver(writer, 1, (_d, _b, _f, written) => written());
    receiver.receive(Msg.WS_TEXT_PART, Buffer.from('a'));
    assert.throws(() => receiver.receive(Msg.WS_BINARY_END, Buffer.from('b')), ProtocolError);
    const bounded = new MessageReceiver(writer, 3, (_d, _b, _f, written) => written(), 10);
    bounded.receive(Msg.WS_BINARY_PART, Buffer.alloc(6));
    bounded.receive(Msg.WS_BINARY_END, Buffer.alloc(4));
    bounded.receive(Msg.WS_TEXT_PART, Buffer.alloc(6));
    assert.throws(() => bounded.receive(Msg.WS_TEXT_END, Buffer.alloc(5)), /message of more than 10 bytes/);
    const greedy = new MessageReceiver(writer, 2, () => {});
    for (let sent = 0; sent < INITIAL_STREAM_WINDOW; sent += MAX_DATA_PAYLOAD)
      greedy.receive(Msg.WS_TEXT_PART, Buffer.alloc(MAX_DATA_PAYLOAD));
    assert.throws(() => greedy.receive(Msg.WS_TEXT_END, Buffer.from('x')), ProtocolError);
    // Each END costs MESSAGE_CREDIT: a peer flooding empty messages runs out of credit too.
    const flooding = new MessageReceiver(writer, 4, () => {});
    for (let i = 0; i < INITIAL_STREAM_WINDOW / MESSAGE_CREDIT; i++) flooding.receive(Msg.WS_TEXT_END, Buffer.alloc(0));
    assert.throws(() => flooding.receive(Msg.WS_TEXT_END, Buffer.alloc(0)), /beyond its \d+-byte window/);
  });
});
