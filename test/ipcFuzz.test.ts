// The IPC fuzz test's share in `npm test`: about 1,000 hostile-worker cases in
// a few seconds, from the same generator and properties as the soak share
// (test/soak/ipcFuzzSoak.test.ts), which throws the rest of the 10,000 a CI
// run must throw. What is fuzzed and how: test/helpers/ipcFuzzSuite.ts.
// Rerun with the printed seed: FUZZ_SEED=<seed> npm test.

import { describeIpcFuzz } from './helpers/ipcFuzzSuite.js';

describeIpcFuzz({
  name: 'npm test',
  rerun: 'npm test',
  runs: {
    randomBytes: 220,
    validSequences: 200,
    invalidFrame: 270,
    mutated: 220,
    floodHeld: 4,
    floodNearLimit: 0, // seconds each (MAX_OPEN_STREAMS upstream calls): the soak share has them
    floodChurn: 1,
    mixed: 90,
  },
  minimum: 1_000,
  timeoutMs: 60_000,
});
