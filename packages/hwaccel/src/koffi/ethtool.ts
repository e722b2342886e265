import { type Koffi, type KoffiFunction, errnoName, loadSystemLibc, messageOf } from './affinity.js'

/**
 * NIC offload features read through the real SIOCETHTOOL ioctl, the way the
 * `ethtool -k` command reads them, on a throwaway datagram socket.
 *
 * Memory layout (include/uapi/linux/if.h, include/uapi/linux/ethtool.h, x86_64 / LP64):
 *   struct ifreq            { char ifr_name[16]; union { ...; void *ifr_data; } }   40 bytes, ifr_data at 16
 *   struct ethtool_value    { u32 cmd; u32 data; }
 *   struct ethtool_sset_info{ u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }   data at 16
 *   struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }        data at 12, 32 bytes a name
 *   struct ethtool_gfeatures{ u32 cmd; u32 size; struct { u32 available, requested, active, never_changed; } features[]; }
 * The buffers are koffi.alloc'd (stable addresses) because the ifreq carries a
 * raw pointer to the ethtool structure.
 */

const SIOCETHTOOL = 0x8946
const IFNAMSIZ = 16
const IFREQ_SIZE = 40

const ETHTOOL_GRXCSUM = 0x14
const ETHTOOL_GTXCSUM = 0x16
const ETHTOOL_GSG = 0x18
const ETHTOOL_GSTRINGS = 0x1b
const ETHTOOL_GTSO = 0x1e
const ETHTOOL_GUFO = 0x21
const ETHTOOL_GGSO = 0x23
const ETHTOOL_GGRO = 0x2b
const ETHTOOL_GSSET_INFO = 0x37
const ETHTOOL_GFEATURES = 0x3a
const ETH_SS_FEATURES = 4
const ETH_GSTRING_LEN = 32

const AF_UNIX = 1
const AF_INET = 2
const AF_INET6 = 10
const SOCK_DGRAM = 2
const SOCK_CLOEXEC = 0o2000000

/** The offloads STOQ reports: true = on, false = off, null = the ioctl did not say (see `errors`). */
export interface NicOffloads {
  /** TCP segmentation offload (ETHTOOL_GTSO: any of the TSO bits). */
  tso: boolean | null
  /** UDP fragmentation offload (ETHTOOL_GUFO). */
  ufo: boolean | null
  /** Generic segmentation offload (ETHTOOL_GGSO). */
  gso: boolean | null
  /** Generic receive offload (ETHTOOL_GGRO). */
  gro: boolean | null
  /** Scatter-gather (ETHTOOL_GSG). */
  sg: boolean | null
  /** Receive checksum offload (ETHTOOL_GRXCSUM). */
  rxChecksum: boolean | null
  /** Transmit checksum offload (ETHTOOL_GTXCSUM: any checksum bit). */
  txChecksum: boolean | null
  /** `tx-udp-segmentation` (UDP GSO in the device) from ETHTOOL_GFEATURES + ETHTOOL_GSTRINGS. */
  udpSegmentation: boolean | null
}

export type NicOffloadName = keyof NicOffloads

export interface EthtoolInterfaceResult {
  name: string
  /** At least one ethtool ioctl succeeded on this interface. */
  answered: boolean
  offloads: NicOffloads
  /** Why an offload is null: the errno name of its ioctl, or a reason. */
  errors: Partial<Record<NicOffloadName, string>>
  /** Every active named feature (`ethtool -k` "on" lines), null when GFEATURES/GSTRINGS failed. */
  activeFeatures: string[] | null
  /** Why `activeFeatures` is null. */
  featuresError: string | null
}

export type EthtoolProbe = { ok: true; socket: string; interfaces: EthtoolInterfaceResult[] } | { ok: false; reason: string }

const LEGACY: ReadonlyArray<readonly [Exclude<NicOffloadName, 'udpSegmentation'>, number]> = [
  ['tso', ETHTOOL_GTSO],
  ['ufo', ETHTOOL_GUFO],
  ['gso', ETHTOOL_GGSO],
  ['gro', ETHTOOL_GGRO],
  ['sg', ETHTOOL_GSG],
  ['rxChecksum', ETHTOOL_GRXCSUM],
  ['txChecksum', ETHTOOL_GTXCSUM],
]

interface Calls {
  koffi: Koffi
  socket: KoffiFunction
  close: KoffiFunction
  ioctl: KoffiFunction
}

let callsCached: { ok: true; calls: Calls } | { ok: false; reason: string } | null = null

function calls(): { ok: true; calls: Calls } | { ok: false; reason: string } {
  if (callsCached !== null) return callsCached
  const libc = loadSystemLibc()
  if (!libc.ok) {
    callsCached = libc
    return callsCached
  }
  try {
    callsCached = {
      ok: true,
      calls: {
        koffi: libc.koffi,
        socket: libc.lib.func('int socket(int domain, int type, int protocol)'),
        close: libc.lib.func('int close(int fd)'),
        // Variadic in <sys/ioctl.h>: the third argument is passed as ('void *', pointer).
        ioctl: libc.lib.func('int ioctl(int fd, unsigned long request, ...)'),
      },
    }
  } catch (err) {
    callsCached = { ok: false, reason: `socket/ioctl do not resolve in ${libc.name}: ${messageOf(err)}` }
  }
  return callsCached
}

/** Raw memory owned by koffi (stable address), with a Buffer view over it. */
class NativeBuffer {
  readonly ptr: bigint
  readonly view: Buffer
  constructor(
    private readonly koffi: Koffi,
    readonly size: number,
  ) {
    this.ptr = koffi.alloc('uint8_t', size) as bigint
    this.view = Buffer.from(koffi.view(this.ptr, size))
    this.view.fill(0)
  }
  free(): void {
    this.koffi.free(this.ptr)
  }
}

/**
 * Read the offloads of each named interface with SIOCETHTOOL. Per-interface
 * failures (ENODEV, EOPNOTSUPP, EPERM...) are reported in the result, not thrown;
 * `ok: false` only when no socket or ioctl can be made at all. Never throws.
 */
export function probeEthtool(names: readonly string[]): EthtoolProbe {
  const c = calls()
  if (!c.ok) return { ok: false, reason: c.reason }
  const { koffi, socket, close, ioctl } = c.calls

  let fd = -1
  let family = ''
  const socketErrors: string[] = []
  for (const [af, label] of [
    [AF_INET, 'AF_INET'],
    [AF_INET6, 'AF_INET6'],
    [AF_UNIX, 'AF_UNIX'],
  ] as const) {
    fd = socket(af, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number
    if (fd >= 0) {
      family = `${label} datagram socket`
      break
    }
    socketErrors.push(`${label}: ${errnoName(koffi.errno())}`)
  }
  if (fd < 0) return { ok: false, reason: `no socket for the ethtool ioctl (${socketErrors.join(', ')})` }

  let ifr: NativeBuffer | null = null
  let data: NativeBuffer | null = null
  try {
    ifr = new NativeBuffer(koffi, IFREQ_SIZE)
    data = new NativeBuffer(koffi, 4096)
    const ifrBuf = ifr
    let dataBuf = data

    /** One SIOCETHTOOL on `name` with the ethtool structure in `dataBuf`; 0 or the errno. */
    const ethtool = (name: string): number => {
      ifrBuf.view.fill(0)
      ifrBuf.view.write(name, 0, IFNAMSIZ - 1, 'latin1')
      ifrBuf.view.writeBigUInt64LE(dataBuf.ptr, IFNAMSIZ)
      const rc = ioctl(fd, SIOCETHTOOL, 'void *', ifrBuf.ptr) as number
      return rc === 0 ? 0 : koffi.errno() || -1
    }
    const ensure = (size: number): void => {
      if (dataBuf.size >= size) return
      dataBuf.free()
      data = null
      dataBuf = new NativeBuffer(koffi, size)
      data = dataBuf
    }

    const interfaces: EthtoolInterfaceResult[] = []
    for (const name of names) {
      const result: EthtoolInterfaceResult = {
        name,
        answered: false,
        offloads: { tso: null, ufo: null, gso: null, gro: null, sg: null, rxChecksum: null, txChecksum: null, udpSegmentation: null },
        errors: {},
        activeFeatures: null,
        featuresError: null,
      }
      interfaces.push(result)
      if (Buffer.byteLength(name, 'latin1') >= IFNAMSIZ || name.length === 0) {
        const why = `name does not fit IFNAMSIZ (${IFNAMSIZ})`
        for (const [key] of LEGACY) result.errors[key] = why
        result.errors.udpSegmentation = why
        result.featuresError = why
        continue
      }

      // Legacy per-feature commands: struct ethtool_value.
      for (const [key, cmd] of LEGACY) {
        dataBuf.view.fill(0, 0, 8)
        dataBuf.view.writeUInt32LE(cmd, 0)
        const err = ethtool(name)
        if (err === 0) {
          result.offloads[key] = dataBuf.view.readUInt32LE(4) !== 0
          result.answered = true
        } else {
          result.errors[key] = errnoName(err)
        }
      }

      // Named features: count (GSSET_INFO), names (GSTRINGS), state (GFEATURES).
      const features = readNamedFeatures(name, ethtool, () => dataBuf.view, ensure)
      if (features.ok) {
        result.answered = true
        result.activeFeatures = features.active
        if (features.names.includes('tx-udp-segmentation')) {
          result.offloads.udpSegmentation = features.active.includes('tx-udp-segmentation')
        } else {
          result.errors.udpSegmentation = 'tx-udp-segmentation is not a feature of this kernel'
        }
      } else {
        result.featuresError = features.reason
        result.errors.udpSegmentation = features.reason
      }
    }
    return { ok: true, socket: family, interfaces }
  } catch (err) {
    return { ok: false, reason: `ethtool probe failed: ${messageOf(err)}` }
  } finally {
    ifr?.free()
    data?.free()
    close(fd)
  }
}

function readNamedFeatures(
  name: string,
  ethtool: (name: string) => number,
  view: () => Buffer,
  ensure: (size: number) => void,
): { ok: true; names: string[]; active: string[] } | { ok: false; reason: string } {
  let buf = view()
  buf.fill(0, 0, 24)
  buf.writeUInt32LE(ETHTOOL_GSSET_INFO, 0)
  buf.writeBigUInt64LE(1n << BigInt(ETH_SS_FEATURES), 8)
  let err = ethtool(name)
  if (err !== 0) return { ok: false, reason: `ETHTOOL_GSSET_INFO: ${errnoName(err)}` }
  if ((buf.readBigUInt64LE(8) & (1n << BigInt(ETH_SS_FEATURES))) === 0n) {
    return { ok: false, reason: 'ETHTOOL_GSSET_INFO: no feature string set' }
  }
  const count = buf.readUInt32LE(16)
  if (count === 0 || count > 4096) return { ok: false, reason: `ETHTOOL_GSSET_INFO: implausible feature count ${count}` }

  const words = Math.ceil(count / 32)
  ensure(Math.max(12 + count * ETH_GSTRING_LEN, 8 + words * 16))
  buf = view()
  buf.fill(0, 0, 12 + count * ETH_GSTRING_LEN)
  buf.writeUInt32LE(ETHTOOL_GSTRINGS, 0)
  buf.writeUInt32LE(ETH_SS_FEATURES, 4)
  buf.writeUInt32LE(count, 8)
  err = ethtool(name)
  if (err !== 0) return { ok: false, reason: `ETHTOOL_GSTRINGS: ${errnoName(err)}` }
  const len = Math.min(buf.readUInt32LE(8), count)
  const names: string[] = []
  for (let i = 0; i < len; i++) {
    const raw = buf.subarray(12 + i * ETH_GSTRING_LEN, 12 + (i + 1) * ETH_GSTRING_LEN)
    const end = raw.indexOf(0)
    names.push(raw.subarray(0, end === -1 ? ETH_GSTRING_LEN : end).toString('latin1'))
  }

  buf.fill(0, 0, 8 + words * 16)
  buf.writeUInt32LE(ETHTOOL_GFEATURES, 0)
  buf.writeUInt32LE(words, 4)
  err = ethtool(name)
  if (err !== 0) return { ok: false, reason: `ETHTOOL_GFEATURES: ${errnoName(err)}` }
  const blocks = Math.min(buf.readUInt32LE(4), words)
  const active: string[] = []
  for (let i = 0; i < names.length; i++) {
    const block = i >> 5
    if (block >= blocks) break
    const activeWord = buf.readUInt32LE(8 + block * 16 + 8)
    const featureName = names[i]
    if (featureName !== undefined && featureName !== '' && ((activeWord >>> (i & 31)) & 1) === 1) active.push(featureName)
  }
  return { ok: true, names, active }
}
