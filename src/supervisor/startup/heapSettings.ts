// V8 flags for the supervisor, set as the first thing it loads: the user starts
// it, so it cannot be given Node flags of ours.
//
// Its heap stays small while bodies stream through it off-heap, so letting the
// young generation grow only adds resident memory (V8 reads the growth factor
// whenever it considers growing, so setting it here is enough). Recompiling
// undici's WebAssembly parser with TurboFan takes a large transient allocation
// and made it no faster; both wasm flags are needed, since dynamic tiering does
// not consult --wasm-tier-up. Measurements: docs/PERFORMANCE.md.

import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--semi-space-growth-factor=1');
setFlagsFromString('--no-wasm-dynamic-tiering');
setFlagsFromString('--no-wasm-tier-up');
