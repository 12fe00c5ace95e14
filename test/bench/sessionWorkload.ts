// What one Codex-like agent session is, shared by the agents (sessions.ts)
// and the mock upstream that answers them (sessionsUpstream.ts): every body,
// message and answer is a pure function of (agent, turn), so every target
// sees the same bytes and the same event spacing.
//
// A turn over HTTP is the request Codex sends: model, instructions, the whole
// history as the input array (messages, then the model's function_call and
// the tool's function_call_output for every earlier turn), tools,
// stream: true. Over WebSocket it is one `response.create` with the same
// fields but `previous_response_id` and only the input the upstream has not
// seen (the last tool output). The answer is a message streamed as text
// deltas and one function call, the events spaced by a seeded random gap.

import { prng } from '../soak/soakKit.js';

export interface SessionShape {
  readonly agents: number;
  readonly turns: number;
  /** Events in one turn's answer, response.created to response.completed. */
  readonly events: number;
  readonly minGapMs: number;
  readonly maxGapMs: number;
  /** The first turn's HTTP body, and the last one's: the history grows evenly between. */
  readonly firstBodyBytes: number;
  readonly lastBodyBytes: number;
}

/** Events of an answer besides its text deltas. */
const FIXED_EVENTS = 12;
const MODEL = 'gpt-5-codex';

/** The soak suites' seeded PRNG, scaled to [0, 1). */
function random(seed: number): () => number {
  const next = prng(seed);
  return () => next() / 2 ** 32;
}

function seedOf(agent: number, turn: number, salt: number): number {
  return Math.imul(agent + 1, 0x9e3779b1) ^ Math.imul(turn + 1, 0x85ebca6b) ^ salt;
}

const WORDS = ['the', 'test', 'fails', 'because', 'parser', 'returns', 'null', 'when', 'input', 'is', 'empty', 'fix'];
const NAMES = ['config', 'request', 'buffer', 'stream', 'handler', 'options', 'result', 'socket', 'frame', 'limit'];

/** Bytes `s` takes inside a JSON string. */
function escapedLength(s: string): number {
  return JSON.stringify(s).length - 2;
}

/** Text that escapes as a source file does in JSON (quotes, backslashes, tabs, newlines), `bytes` long escaped. */
function sourceText(rand: () => number, bytes: number): string {
  const pick = (xs: readonly string[]): string => xs[Math.floor(rand() * xs.length)] as string;
  let text = '';
  let n = 0;
  for (let i = 1; ; i++) {
    const call = `await ${pick(NAMES)}.read("${pick(WORDS)}\\n", ${i})`;
    const line = `${String(i).padStart(6)}\t  const ${pick(NAMES)} = ${call};\n`;
    const size = escapedLength(line);
    if (n + size > bytes) break;
    text += line;
    n += size;
  }
  return text + ' '.repeat(bytes - n);
}

const INSTRUCTION_LINE =
  'You are a coding agent running in a terminal. Keep going until the task is solved; use the "shell" tool ' +
  'to read files and run tests, `apply_patch` to edit them.\n';

const TOOLS = [
  {
    type: 'function',
    name: 'shell',
    description: 'Runs a shell command and returns its output.',
    strict: false,
    parameters: {
      type: 'object',
      properties: {
        command: { type: 'array', items: { type: 'string' }, description: 'The command to execute' },
        workdir: { type: 'string', description: 'The working directory to execute the command in' },
        timeout_ms: { type: 'number', description: 'The timeout for the command in milliseconds' },
      },
      required: ['command'],
      additionalProperties: false,
    },
  },
  {
    type: 'function',
    name: 'apply_patch',
    description: 'Use the `apply_patch` tool to edit files. '.repeat(20),
    strict: false,
    parameters: {
      type: 'object',
      properties: { input: { type: 'string', description: 'The entire contents of the apply_patch command' } },
      required: ['input'],
      additionalProperties: false,
    },
  },
  {
    type: 'function',
    name: 'update_plan',
    description: 'Updates the task plan. Provide an optional explanation and a list of plan items.',
    strict: false,
    parameters: {
      type: 'object',
      properties: {
        explanation: { type: 'string' },
        plan: {
          type: 'array',
          items: {
            type: 'object',
            properties: { step: { type: 'string' }, status: { type: 'string' } },
            required: ['step', 'status'],
            additionalProperties: false,
          },
        },
      },
      required: ['plan'],
      additionalProperties: false,
    },
  },
];

/** The request fields after `input`, the same every turn. */
function requestTail(agent: number): string {
  return JSON.stringify({
    tools: TOOLS,
    tool_choice: 'auto',
    parallel_tool_calls: false,
    reasoning: { effort: 'medium', summary: 'auto' },
    store: false,
    stream: true,
    include: ['reasoning.encrypted_content'],
    prompt_cache_key: promptCacheKey(agent),
  }).slice(1);
}

export function promptCacheKey(agent: number): string {
  return `bench-agent-${agent}`;
}

/** The agent of a prompt_cache_key, or null. */
export function agentOf(key: unknown): number | null {
  const m = typeof key === 'string' ? /^bench-agent-(\d+)$/.exec(key) : null;
  return m === null ? null : Number(m[1]);
}

export function responseId(agent: number, turn: number): string {
  return `resp_${agent}_${turn}`;
}

/** The turn whose previous_response_id this is (0 for none), or null. */
export function turnAfter(previousResponseId: unknown, agent: number): number | null {
  if (previousResponseId === undefined || previousResponseId === null) return 0;
  const m = typeof previousResponseId === 'string' ? /^resp_(\d+)_(\d+)$/.exec(previousResponseId) : null;
  return m === null || Number(m[1]) !== agent ? null : Number(m[2]) + 1;
}

export function callId(agent: number, turn: number): string {
  return `call_${agent}_${turn}`;
}

/** The function call the model answers turn `turn` with (and the client echoes back over HTTP). */
function modelCall(agent: number, turn: number): Record<string, unknown> {
  return {
    type: 'function_call',
    name: 'shell',
    arguments: JSON.stringify({ command: ['bash', '-lc', `sed -n '1,400p' src/module${turn}.ts`], workdir: '/repo' }),
    call_id: callId(agent, turn),
  };
}

/** What each turn adds to the HTTP body. */
function stepBytes(shape: SessionShape): number {
  return shape.turns > 1 ? Math.round((shape.lastBodyBytes - shape.firstBodyBytes) / (shape.turns - 1)) : 0;
}

/** The exact size of turn `turn`'s HTTP body (so the mock can tell the turn without parsing it). */
export function httpBodyBytes(shape: SessionShape, turn: number): number {
  return shape.firstBodyBytes + turn * stepBytes(shape);
}

/** One agent's requests, built turn by turn (the history is kept as JSON text). */
export class AgentSession {
  private readonly head: string;
  private readonly tail: string;
  private readonly history: string[];

  constructor(
    readonly shape: SessionShape,
    readonly agent: number,
  ) {
    this.tail = requestTail(agent);
    this.history = [
      JSON.stringify({
        type: 'message',
        role: 'developer',
        content: [
          {
            type: 'input_text',
            text: '<environment_context>cwd: /repo, sandbox: workspace-write</environment_context>',
          },
        ],
      }),
      JSON.stringify({
        type: 'message',
        role: 'user',
        content: [
          {
            type: 'input_text',
            text: `Agent ${agent}: the parser tests fail on empty input; find out why and fix it.`,
          },
        ],
      }),
    ];
    const headFor = (instructions: string): string =>
      `{"model":${JSON.stringify(MODEL)},"instructions":${JSON.stringify(instructions)},"input":[`;
    const room = Math.max(0, shape.firstBodyBytes - this.body(headFor('')).length);
    const lines = Math.floor(room / escapedLength(INSTRUCTION_LINE));
    const pad = ' '.repeat(room - lines * escapedLength(INSTRUCTION_LINE));
    this.head = headFor(INSTRUCTION_LINE.repeat(lines) + pad);
  }

  /** The HTTP body with the history so far. */
  private body(head: string): string {
    return `${head}${this.history.join(',')}],${this.tail}`;
  }

  /** The tool output the agent sends after the model's call of turn `turn`, sized so each turn adds a step. */
  private toolOutput(turn: number): string {
    const call = JSON.stringify(modelCall(this.agent, turn));
    const item = (output: string): string =>
      JSON.stringify({ type: 'function_call_output', call_id: callId(this.agent, turn), output });
    const room = Math.max(0, stepBytes(this.shape) - call.length - item('').length - 2);
    return item(sourceText(random(seedOf(this.agent, turn, 0x51ed)), room));
  }

  /** Input items the upstream has not seen before turn `turn`: the whole start, then the last tool output. */
  private newItems(turn: number): string[] {
    return turn === 0 ? this.history.slice(0, 2) : [this.toolOutput(turn - 1)];
  }

  /** The HTTP body of turn `turn` (turns must be asked in order, from 0). */
  httpBody(turn: number): Buffer {
    if (turn > 0) this.history.push(JSON.stringify(modelCall(this.agent, turn - 1)), this.toolOutput(turn - 1));
    if (this.history.length !== 2 + 2 * turn) throw new Error('AgentSession: turns out of order');
    const body = Buffer.from(this.body(this.head));
    if (body.length !== httpBodyBytes(this.shape, turn)) throw new Error('AgentSession: shape too small for its turns');
    return body;
  }

  /** The WebSocket `response.create` of turn `turn`. */
  webSocketMessage(turn: number): string {
    const previous = turn === 0 ? '' : `"previous_response_id":${JSON.stringify(responseId(this.agent, turn - 1))},`;
    return `{"type":"response.create",${previous}${this.head.slice(1)}${this.newItems(turn).join(',')}],${this.tail}`;
  }
}

export interface Answer {
  /** The events before response.completed, serialized (the type and the JSON, for SSE or a message). */
  readonly events: ReadonlyArray<{ readonly type: string; readonly json: string }>;
  /** Milliseconds after the request each event is due, response.completed last. */
  readonly dueMs: readonly number[];
  /** response.completed, stamped with when the mock had the request and sent this event (CLOCK_MONOTONIC µs). */
  completed(receivedUs: number, sentUs: number): string;
}

/** The answer to turn `turn` of agent `agent`. */
export function answer(shape: SessionShape, agent: number, turn: number): Answer {
  const rand = random(seedOf(agent, turn, 0xa11));
  const id = responseId(agent, turn);
  const msg = `msg_${agent}_${turn}`;
  const fc = `fc_${agent}_${turn}`;
  const call = modelCall(agent, turn);
  const response = { id, object: 'response', created_at: 1760000000 + turn, model: MODEL };
  const deltas = Array.from({ length: Math.max(1, shape.events - FIXED_EVENTS) }, () => {
    const w = WORDS[Math.floor(rand() * WORDS.length)] as string;
    return ` ${w}`;
  });
  const text = deltas.join('');
  const message = { id: msg, type: 'message', role: 'assistant', status: 'completed' };
  const part = { type: 'output_text', text, annotations: [] };
  const raw: Array<Record<string, unknown>> = [
    { type: 'response.created', response: { ...response, status: 'in_progress', output: [] } },
    { type: 'response.in_progress', response: { ...response, status: 'in_progress', output: [] } },
    { type: 'response.output_item.added', output_index: 0, item: { ...message, status: 'in_progress', content: [] } },
    {
      type: 'response.content_part.added',
      item_id: msg,
      output_index: 0,
      content_index: 0,
      part: { ...part, text: '' },
    },
    ...deltas.map((delta) => ({
      type: 'response.output_text.delta',
      item_id: msg,
      output_index: 0,
      content_index: 0,
      delta,
      logprobs: [],
    })),
    { type: 'response.output_text.done', item_id: msg, output_index: 0, content_index: 0, text, logprobs: [] },
    { type: 'response.content_part.done', item_id: msg, output_index: 0, content_index: 0, part },
    { type: 'response.output_item.done', output_index: 0, item: { ...message, content: [part] } },
    {
      type: 'response.output_item.added',
      output_index: 1,
      item: { ...call, id: fc, status: 'in_progress', arguments: '' },
    },
    { type: 'response.function_call_arguments.delta', item_id: fc, output_index: 1, delta: call.arguments },
    { type: 'response.function_call_arguments.done', item_id: fc, output_index: 1, arguments: call.arguments },
    { type: 'response.output_item.done', output_index: 1, item: { ...call, id: fc, status: 'completed' } },
  ];
  const events = raw.map((e, i) => ({ type: e.type as string, json: JSON.stringify({ ...e, sequence_number: i }) }));
  const dueMs: number[] = [0];
  for (let i = 1; i <= events.length; i++)
    dueMs.push((dueMs[i - 1] as number) + shape.minGapMs + rand() * (shape.maxGapMs - shape.minGapMs));
  const output = [
    { ...message, content: [part] },
    { ...call, id: fc, status: 'completed' },
  ];
  const usage = { input_tokens: 5000 + 5000 * turn, output_tokens: 300, total_tokens: 5300 + 5000 * turn };
  return {
    events,
    dueMs,
    completed: (receivedUs, sentUs) =>
      JSON.stringify({
        type: 'response.completed',
        sequence_number: events.length,
        response: {
          ...response,
          status: 'completed',
          output,
          usage,
          metadata: { bench_received_us: String(receivedUs), bench_sent_us: String(sentUs) },
        },
      }),
  };
}

/** The mock's time with a turn, from a response.completed event's stamps, in µs (NaN if absent). */
export function upstreamHeldUs(completed: { response?: { metadata?: Record<string, unknown> } }): number {
  const m = completed.response?.metadata;
  return Number(m?.bench_sent_us) - Number(m?.bench_received_us);
}
