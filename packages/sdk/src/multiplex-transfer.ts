/**
 * One transfer over the members of a `Multiplexer`: the data is cut into
 * chunks, each chunk goes on its own bidirectional stream of whichever member
 * the strategy picks, and the receiver answers each chunk with one status byte
 * once it verified and stored it (or knew it already). A chunk whose member
 * dies before that answer is sent again on another member, so the receiver
 * sees duplicates and drops them.
 *
 * Chunk stream, sender → receiver: a 72-byte header, then `length` bytes, then FIN.
 *
 *    0  magic "SQM1"
 *    4  version u8 (1)
 *    5  flags u8: bit 0 = final chunk (the transfer is offset + length bytes long)
 *    6  reserved u16 (0)
 *    8  transfer id, 16 bytes
 *   24  chunk index u32 BE
 *   28  length u32 BE
 *   32  offset u64 BE (at most 2^53 - 1)
 *   40  SHA-256 of the chunk's bytes, 32 bytes
 *
 * Receiver → sender: one status byte (`CHUNK_STATUS`), then FIN.
 *
 * Memory is bounded on both sides. The sender has at most `depth` chunks in
 * flight per member, and only chunks within `windowBytes` of the lowest chunk
 * not yet confirmed. The receiver reads a chunk's body only once the chunk lies
 * within `windowBytes` of what its reader has consumed; until then the chunk
 * waits in QUIC flow control (backpressure, no copy).
 */
export {
  CHUNK_MAGIC,
  CHUNK_VERSION,
  CHUNK_HEADER_BYTES,
  CHUNK_STATUS,
  type ChunkStatus,
  DEFAULT_TRANSFER_CHUNK_BYTES,
  MIN_TRANSFER_CHUNK_BYTES,
  MAX_TRANSFER_CHUNK_BYTES,
  DEFAULT_TRANSFER_DEPTH,
  MAX_TRANSFER_DEPTH,
  DEFAULT_TRANSFER_WINDOW_BYTES,
  MAX_TRANSFER_WINDOW_BYTES,
  DEFAULT_TRANSFER_STALL_MS,
  DEFAULT_TRANSFER_MAX_RETRIES,
  DEFAULT_RECEIVER_MAX_TRANSFERS,
  type ChunkHeader,
  encodeChunkHeader,
  decodeChunkHeader,
  chunkHeaderFor,
  sendChunk,
} from './multiplex-transfer/wire.js'
export {
  type TransferSource,
  type TransferOptions,
  type ResolvedTransferOptions,
  type TransferMemberResult,
  type TransferResult,
  validateTransferOptions,
  type OutgoingChunk,
  sourceChunks,
  chunkStatusError,
} from './multiplex-transfer/sender.js'
export {
  type IncomingTransferResult,
  type ChunkInfo,
  type TransferReceiverOptions,
  type TransferReceiverStats,
  IncomingTransfer,
  type TransferReceiver,
  createTransferReceiver,
} from './multiplex-transfer/receiver.js'
