// V8 flags for the supervisor, set as the first thing it loads: the user starts
// it, so it cannot be given Node flags of ours.
//
// Its heap stays small while bodies stream through it off-heap, so letting the
// young generation grow only adds resident memory (V8 reads the growth factor
// whenever it considers growing, so setting it here is enough). Recompiling
// undici's WebAssembly parser with TurboFan takes a large transient allocation
// and made it no faster; both wasm flags are needed, since dynamic tiering does
// not consult --wasm-tier-up. The marking triggers are explained where they are
// defined. Measurements: docs/PERFORMANCE.md.

import { setFlagsFromString } from 'node:v8';
import { MARKING_TRIGGER_FLAGS } from '../../shared/constants.js';

for (const flag of [
  '--semi-space-growth-factor=1',
  '--no-wasm-dynamic-tiering',
  '--no-wasm-tier-up',
  ...MARKING_TRIGGER_FLAGS,
]) {
  setFlagsFromString(flag);
}
