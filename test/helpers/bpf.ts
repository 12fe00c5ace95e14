// A classic-BPF interpreter for seccomp programs: runs a filter's bytes on a
// synthetic struct seccomp_data, so a compiled program can be checked against
// its table on any machine, and a filter read back from a live process too.
// Knows the instructions seccomp filters use (loads of seccomp_data words,
// AND with a constant, forward jumps, returns); anything else is an error.

export const AUDIT_ARCH = { x64: 0xc000003e, arm64: 0xc00000b7, i386: 0x40000003 } as const;

export const RET_KILL_PROCESS = 0x80000000;
export const RET_ALLOW = 0x7fff0000;
export const RET_EPERM = 0x00050000 | 1;
export const RET_ENOSYS = 0x00050000 | 38;

export interface SeccompData {
  readonly arch: number;
  readonly nr: number;
  /** Up to six arguments; a bigint sets all 64 bits. */
  readonly args?: ReadonlyArray<number | bigint>;
}

export interface FilterRun {
  /** The SECCOMP_RET_* value returned. */
  readonly action: number;
  /** Instructions executed. */
  readonly steps: number;
}

export function runFilter(program: Buffer, input: SeccompData): FilterRun {
  if (program.length === 0 || program.length % 8 !== 0) throw new Error(`not a BPF program: ${program.length} bytes`);
  const data = Buffer.alloc(64); // int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
  data.writeUInt32LE(input.nr >>> 0, 0);
  data.writeUInt32LE(input.arch, 4);
  (input.args ?? []).forEach((arg, i) => data.writeBigUInt64LE(BigInt.asUintN(64, BigInt(arg)), 16 + 8 * i));
  const length = program.length / 8;
  let acc = 0;
  let steps = 0;
  for (let pc = 0; pc < length; pc++) {
    steps++;
    const code = program.readUInt16LE(pc * 8);
    const jt = program.readUInt8(pc * 8 + 2);
    const jf = program.readUInt8(pc * 8 + 3);
    const k = program.readUInt32LE(pc * 8 + 4);
    switch (code) {
      case 0x20: // ld [k]
        if (k % 4 !== 0 || k + 4 > data.length) throw new Error(`load out of seccomp_data at ${pc}: ${k}`);
        acc = data.readUInt32LE(k);
        break;
      case 0x54: // and #k
        acc = (acc & k) >>> 0;
        break;
      case 0x05: // ja +k
        pc += k;
        break;
      case 0x15: // jeq #k
        pc += acc === k ? jt : jf;
        break;
      case 0x35: // jge #k
        pc += acc >= k ? jt : jf;
        break;
      case 0x45: // jset #k
        pc += (acc & k) !== 0 ? jt : jf;
        break;
      case 0x06: // ret #k
        return { action: k, steps };
      default:
        throw new Error(`unexpected BPF opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error('BPF program fell off its end');
}
