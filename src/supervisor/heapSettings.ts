// V8 heap settings for the supervisor, applied as the first thing it loads
// (the user starts it, so it cannot be given node flags of our choosing).
//
// The supervisor's JavaScript heap stays small (about 12 MB) while response
// bodies stream through it as off-heap buffers. Under that load V8 grows the
// young generation (new space 8 -> 33 MB); that buys nothing but resident memory
// (measured: +22 MiB peak holding 1000 slow streams) and, once the young
// generation outgrows the old generation's headroom, full-heap marking runs
// back to back. The growth factor is read whenever V8 considers growing the
// young generation, so setting it here is enough: the young generation keeps
// the size it has after startup.
//
// The supervisor's only WebAssembly is undici's HTTP parser (llhttp). V8 runs
// it first as baseline (Liftoff) code and, once it is hot, recompiles it with
// TurboFan on a background thread whose zone briefly takes ~25 MiB: that
// happened in the first burst of streams, and set the supervisor's peak
// (measured holding 1000 slow streams: tree peak 164-180 -> 152-155 MiB with
// tier-up off). The baseline code parses as fast here: A/B runs showed no
// difference in supervisor CPU for small requests (0.41-0.45 s per 10k either
// way) or bulk streams (1.45-1.59 s/GB either way). Both flags are needed
// (each alone left the peak at 159-171 MiB): V8's dynamic tiering does not
// consult --wasm-tier-up, and without dynamic tiering it tiers up eagerly.

import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--semi-space-growth-factor=1');
setFlagsFromString('--no-wasm-dynamic-tiering');
setFlagsFromString('--no-wasm-tier-up');
