// What a Responses API upstream streams for one turn: response.created, text
// deltas, response.completed with usage, as server-sent events.

export interface SseEvent {
  readonly type: string;
  readonly [field: string]: unknown;
}

export function responseEvents(text: string, id = 'resp_mock_1', deltas = 4): SseEvent[] {
  const words = text.split(/(?<= )/);
  const per = Math.max(1, Math.ceil(words.length / deltas));
  const pieces: string[] = [];
  for (let i = 0; i < words.length; i += per) pieces.push(words.slice(i, i + per).join(''));
  const response = { id, object: 'response', model: 'mock-model', status: 'in_progress', output: [] as unknown[] };
  const item = {
    id: 'msg_mock_1',
    type: 'message',
    role: 'assistant',
    status: 'completed',
    content: [{ type: 'output_text', text, annotations: [] }],
  };
  return [
    { type: 'response.created', response },
    { type: 'response.output_item.added', output_index: 0, item: { ...item, status: 'in_progress', content: [] } },
    ...pieces.map((delta) => ({
      type: 'response.output_text.delta',
      item_id: item.id,
      output_index: 0,
      content_index: 0,
      delta,
    })),
    { type: 'response.output_item.done', output_index: 0, item },
    {
      type: 'response.completed',
      response: {
        ...response,
        status: 'completed',
        output: [item],
        usage: { input_tokens: 12, output_tokens: pieces.length, total_tokens: 12 + pieces.length },
      },
    },
  ];
}

export function encodeSse(event: SseEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}
