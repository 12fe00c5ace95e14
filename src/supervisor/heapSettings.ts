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

import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--semi-space-growth-factor=1');
